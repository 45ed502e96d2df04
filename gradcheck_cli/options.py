"""ONE option schema: every option of a check declared once, in OPTIONS below.

A row says what the option is called everywhere (its name is the CheckOptions field, the Python API
keyword and the batch file's TOML key; its flags are the command line's), what values it takes, its
default, help and check, and how the replay line writes it. From the rows come:
- CheckOptions and CheckOptions.validate (here);
- the click options of check, step, graph, steps and module (cli.py: the decorators read GROUPS);
- the keywords of the Python API's check() (api.py, through `api_options`);
- the batch loaders: TOML keys type-checked by `toml_value`, txt lines parsed by click's own parser of
  `check` (batch.py);
- the replay line (`replay_args`).
Adding an option is one row here (and the code that acts on it). This module imports neither click nor torch.
"""
from __future__ import annotations

import dataclasses
import json
import keyword
import numbers
import re
import unicodedata
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .compare import DEFAULT_TOLERANCES
from .errors import InputError
from .numeric import METHODS, TAYLOR
from .parse import DEFAULT_LIMITS, Limits

DTYPES = tuple(DEFAULT_TOLERANCES)
METHOD_CHOICES = ("auto", *METHODS, TAYLOR)
DEFAULT_DIRECTIONS = 16      # a projected check's directions: errors cancel in all with chance ≤ 2^-16
MAX_DIRECTIONS = 1_000
MAX_PASSES = 1_000           # --accumulate
MAX_STEPS = 10_000           # gradcheck step --steps
SEED_RANGE = (-2**63, 2**64 - 1)  # what torch.manual_seed accepts
MAX_REPLAY_ELEMENTS = 64     # larger values given from Python are named in the replay, not spelled out


@dataclasses.dataclass(frozen=True)
class Kind:
    """What values an option takes: its click type (cli.py maps `tag`), its TOML type check, its message."""

    tag: str                    # int | number | text | flag | switch | names | paths | spec | dtypes
    name: str                   # in messages: "'seed' must be int, not float"
    accepts: tuple[type, ...]   # the TOML (and JSON-like) types allowed


INT = Kind("int", "int", (int,))
NUMBER = Kind("number", "a number", (int, float))
TEXT = Kind("text", "str", (str,))
FLAG = Kind("flag", "bool", (bool,))             # --symbolic: on or off
SWITCH = Kind("switch", "bool", (bool,))         # --fast/--full: on, off, or unset (None)
NAMES = Kind("names", "str or list", (str, list))  # --wrt a,b / wrt = ["a", "b"]
PATHS = Kind("paths", "list", (list,))           # --plugin, repeatable
SPEC = Kind("spec", "a number, a list of numbers or a SPEC string", (int, float, str, list))
DTYPE = Kind("dtypes", "str", (str,))            # one dtype (the command line takes a comma list: a ladder)
GLOBS = Kind("globs", "str or list", (str, list))  # --params 'layer.*,head.bias' / params = ["layer.*"]
INIT = Kind("init", "a table of keyword arguments (init = { in_feature = 1 })", (dict, str))      # --init "in_feature=1" / init = { in_feature = 1 }


# Which commands take each group of options (cli.py's decorators are these groups).
GROUPS = {
    "expression": ("check", "step", "graph", "steps", "module"),   # expression_options (with the limits)
    "limits": ("check", "step", "graph", "steps", "module"),
    "grad_output": ("check", "step", "graph", "steps", "module"),  # grad_output_option
    "wrt": ("check", "step", "graph", "steps", "module"),          # wrt_option
    "method": ("check", "step", "steps", "module"),                # method_options
    "check": ("check", "step", "module"),                          # check_options
    "accumulate": ("check",),                                      # accumulate_option: a case kind
    "optim": ("step", "module"),                                   # optim_options: --optim, --steps
    "step": ("step",),                                             # step_options: a case kind
    "module": ("module",),                                         # module_options: what a module check checks
}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option, declared once."""

    name: str                           # CheckOptions field, API keyword, TOML key
    flags: tuple[str, ...]              # click declarations: ("--seed",), ("--fast/--full",)
    kind: Kind
    default: Any
    help: str
    group: str
    where: str = "options"              # options: a CheckOptions field; limits: of .limits; kind: a case kind's key;
                                        # module: a ModuleRequest field (gradcheck module, a module case's key)
    choices: tuple[str, ...] = ()
    bounds: tuple[int, int | None] | None = None   # inclusive; the click IntRange too
    check: Callable[[Any], str | None] | None = None  # the message when a value is wrong
    metavar: str | None = None
    replay_always: bool = False         # written in the replay line even at its default
    required: tuple[str, ...] = ()      # the commands whose command line must give it

    @property
    def flag(self) -> str:
        """The flag messages and the replay line use: --fast (of --fast/--full)."""
        return self.flags[0].split("/")[0]

    @property
    def commands(self) -> tuple[str, ...]:
        return GROUPS[self.group]

    def convert(self, value: Any) -> Any:
        """A value from any source (click, TOML, API) → the field's value; InputError when it cannot be."""
        if value is None:
            return None
        tag = self.kind.tag
        if tag == "int":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InputError(f"{self.flag} must be an integer, not {value!r}")
            return int(value)
        if tag == "number":
            try:
                if isinstance(value, bool):
                    raise TypeError
                return float(value)
            except (TypeError, ValueError):
                raise InputError(f"{self.flag} must be a number, not {value!r}") from None
        if tag == "names":
            return split_names(value)
        if tag == "globs":
            return split_globs(value)
        if tag == "paths":
            return (value,) if isinstance(value, str) else tuple(value)
        if tag == "dtypes" and isinstance(value, tuple):  # the command line's list; a ladder runs the rest
            return value[0]
        if tag in ("flag", "switch"):
            return bool(value)
        return value

    def problem(self, value: Any) -> str | None:
        """What is wrong with a converted value, or None."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"unknown {self.name} '{value}'; use one of {', '.join(self.choices)}"
        if self.check:
            message = self.check(value)
            if message:
                return message
        if self.bounds is not None:
            low, high = self.bounds
            if value < low or (high is not None and value > high):
                return (f"{self.flag} must be between {low} and {high}, not {value}" if high is not None
                        else f"{self.flag} must be at least {low}, not {value}")
        return None

    def replay(self, value: Any) -> list[str]:
        """How the replay line writes this value (nothing for a default unless replay_always)."""
        if value is None or (not self.replay_always and self.default is not None and value == self.default):
            return []
        tag = self.kind.tag
        if tag == "flag":
            return [self.flag] if value else []
        if tag == "switch":
            on, _, off = self.flags[0].partition("/")
            return [on if value else off]
        if tag == "paths":
            return [part for item in value for part in (self.flag, item)]
        if tag in ("names", "globs"):
            return [self.flag, ",".join(value)]
        if tag == "spec":
            return [self.flag, spec_text(value)]
        if tag == "number":
            return [self.flag, repr(value)]
        return [self.flag, str(value)]


def _finite(minimum: str) -> Callable[[str], Callable[[float], str | None]]:
    def make(flag: str) -> Callable[[float], str | None]:
        def check(value: float) -> str | None:
            ok = np.isfinite(value) and (value > 0 if minimum == "> 0" else value >= 0)
            return None if ok else f"{flag} must be a finite number {minimum}, not {value}"
        return check
    return make


def _seed(value: int) -> str | None:
    if SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        return None
    return f"--seed must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]} (torch.manual_seed's range), not {value}"


def _order(value: int) -> str | None:
    return None if value in (1, 2) else f"--order must be 1 or 2, not {value}"


def _limit(name: str, help_text: str) -> Option:
    default = getattr(DEFAULT_LIMITS, name)  # parse.Limits owns the values; this row owns the option
    return Option(name, (f"--{name.replace('_', '-')}",), NUMBER if isinstance(default, float) else INT, default,
                  f"Limit: {help_text}.", "limits", where="limits",
                  check=lambda v: None if v >= 0 else f"--{name.replace('_', '-')} must be >= 0, not {v}")


# In replay order. Help lists each group's options in this order too.
OPTIONS: tuple[Option, ...] = (
    Option("grad_output", ("--grad-output",), SPEC, None,
           "Upstream gradient for a non-scalar output, as Q.backward(gradient=g).", "grad_output", metavar="SPEC"),
    Option("wrt", ("--wrt",), NAMES, None, "Only these variables get gradients; the rest are constants.", "wrt",
           metavar="a,b"),
    Option("seed", ("--seed",), INT, 0, "Seed for random values: same seed, same values, same output.",
           "expression", check=_seed, replay_always=True),
    Option("method", ("--method",), TEXT, "auto",
           "Numeric method; auto picks complex step where every op allows it, else Richardson; taylor fits the "
           "order of the Taylor remainder (2: right, 1: wrong) instead of comparing values.", "method",
           choices=METHOD_CHOICES, replay_always=True),
    Option("dtype", ("--dtype",), DTYPE, "float64",
           "dtype of the torch side: float64, float32, float16 or bfloat16; a comma list (float64,float32,bfloat16) "
           "runs each and says whether a gap is rounding or a bug.", "expression", choices=DTYPES,
           replay_always=True),
    Option("eps", ("--eps",), NUMBER, None, "Absolute finite-difference step (default: per element).", "method",
           check=_finite("> 0")("--eps")),
    Option("atol", ("--atol",), NUMBER, None, "Absolute tolerance (default: by dtype).", "check",
           check=_finite(">= 0")("--atol")),
    Option("rtol", ("--rtol",), NUMBER, None, "Relative tolerance (default: by dtype).", "check",
           check=_finite(">= 0")("--rtol")),
    Option("device", ("--device",), TEXT, "cpu",
           "torch device for the analytic side (the numeric side stays on the CPU).", "expression"),
    Option("allow_unreliable", ("--allow-unreliable",), FLAG, False,
           "Elements where the numeric estimate is itself unsure do not fail the check.", "check"),
    Option("order", ("--order",), INT, 1,
           "2 also checks second derivatives (double backward) as an element-wise Hessian.", "check",
           bounds=(1, 2), check=_order),
    Option("fast", ("--fast/--full",), SWITCH, None,
           "Projected check along random ±1 directions, with a statement of what it covers (--fast), or every "
           "element (--full). Default: projected only when a full check would be too large.", "check"),
    Option("directions", ("--directions",), INT, DEFAULT_DIRECTIONS, "Random directions of a projected check.",
           "check", bounds=(1, MAX_DIRECTIONS)),
    Option("symbolic", ("--symbolic",), FLAG, False,
           "Also the exact derivative from sympy (pip install sympy), as a third column that says which side is "
           "off where analytic and numeric disagree.", "check"),
    Option("plugins", ("--plugin",), PATHS, (),
           "Custom ops: a file or module defining OPS (and optionally NUMPY_OPS).", "expression",
           metavar="FILE.py|module"),
    _limit("max_elements", "largest input tensor, in elements"),
    _limit("max_length", "longest expression, in characters"),
    _limit("max_depth", "deepest nesting of the expression"),
    _limit("max_statements", "most statements in one expression"),
    _limit("max_power", "largest literal exponent"),
    _limit("max_memory", "memory one case may use (inputs, autograd, Jacobian, numeric side), in MB"),
    # case kinds (kinds.py): not CheckOptions fields, but options of their command and keys of a batch case
    Option("accumulate", ("--accumulate",), INT, None,
           "Also call backward() N times without zeroing (.grad must be k × the gradient after pass k), then N "
           "times with .grad.zero_() before each (1 × every time).", "accumulate", where="kind",
           bounds=(1, MAX_PASSES), metavar="N"),
    Option("optim", ("--optim",), TEXT, None,
           "The optimizer, as torch.optim.NAME(params, key=value, ...) is called: SGD, Adam, AdamW, RMSprop, "
           "Adagrad, Adamax, NAdam, RAdam, Adadelta, Rprop, or a plugin's OPTIMIZERS. gradcheck module steps "
           "the checked parameters with it.", "optim", where="kind", metavar="'NAME(key=value, ...)'",
           required=("step",)),
    Option("steps", ("--steps",), INT, 1, "Optimizer steps to run.", "optim", where="kind", bounds=(1, MAX_STEPS),
           replay_always=True),
    Option("recompute", ("--recompute/--no-recompute",), SWITCH, True,
           "zero_grad, recompute the loss and backward before every step (a training loop); --no-recompute calls "
           "step() again on the first .grad.", "step", where="kind"),
    # gradcheck module: a module case's keys (kinds.module_kind), and ModuleRequest's fields
    Option("init", ("--init",), INIT, None,
           "Keyword arguments for the module class, literals only (numbers, strings, True/False/None, lists, "
           "tuples), e.g. \"in_feature=1, out_feature=3\".", "module", where="module", metavar="'key=value, ...'"),
    Option("loss", ("--loss",), TEXT, None,
           "What to check, in the expression language with out bound to forward's output (a tuple: out[0]), "
           "e.g. \"(out - label).mean()\". Default: the output itself.", "module", where="module", metavar="EXPR"),
    Option("params", ("--params",), GLOBS, None,
           "Check only the parameters whose dotted names match (fnmatch), e.g. 'line_layer.*'.", "module",
           where="module", metavar="GLOB[,GLOB]"),
    Option("wrt_inputs", ("--wrt-inputs",), FLAG, False, "Also check forward's float tensor arguments.", "module",
           where="module"),
    Option("train", ("--train/--eval",), SWITCH, False,
           "Train mode (dropout, batch statistics) or evaluation mode (the default).", "module", where="module"),
)

BY_NAME = {option.name: option for option in OPTIONS}
CHECK_FIELDS = tuple(o for o in OPTIONS if o.where == "options")
LIMITS = tuple(o for o in OPTIONS if o.where == "limits")
KINDS = tuple(o for o in OPTIONS if o.where == "kind")
MODULE_OPTIONS = tuple(o for o in OPTIONS if o.where == "module")


def in_group(*groups: str) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if o.group in groups)


# ---- CheckOptions: its fields are the rows above, plus the limits and one internal switch ----

def _validate(self: Any) -> None:
    """Raise InputError for the first wrong option, then for options that cannot go together."""
    for option in CHECK_FIELDS:
        message = option.problem(getattr(self, option.name))
        if message:
            raise InputError(message)
    for option in LIMITS:
        message = option.problem(getattr(self.limits, option.name))
        if message:
            raise InputError(message)
    for message, conflict in _CONFLICTS:
        if conflict(self):
            raise InputError(message)


_CONFLICTS = (
    ("--order 2 checks every Hessian element; it cannot be combined with --fast", lambda o: o.fast and o.order == 2),
    ("--symbolic checks every element; it cannot be combined with --fast", lambda o: o.symbolic and o.fast),
    ("--method taylor tests every element; it cannot be combined with --fast", lambda o: o.fast and o.method == TAYLOR),
)

CheckOptions = dataclasses.make_dataclass(
    "CheckOptions",
    [*((o.name, Any, dataclasses.field(default=o.default)) for o in CHECK_FIELDS),
     ("limits", Limits, dataclasses.field(default=DEFAULT_LIMITS)),
     ("inspect_ops", bool, dataclasses.field(default=True))],  # check each custom-op call site alone (custom.py)
    namespace={"validate": _validate, "__doc__": "Every option of `gradcheck check` but the variables: the rows "
               "of options.OPTIONS whose `where` is 'options', `limits` (parse.Limits) and `inspect_ops`."},
    frozen=True)
CheckOptions.__module__ = __name__  # so a pickled case (the -j pool) finds the class


def make_options(given: Mapping[str, Any], **extra: Any) -> Any:
    """CheckOptions from option values by name (click's keywords, a TOML table, API keywords).

    Names that are not check options are ignored; absent ones take their defaults. `extra` sets fields
    directly (limits=, inspect_ops=) before the limit rows are applied on top. Raises InputError for a value
    that cannot be converted (validation happens in CheckOptions.validate).
    """
    fields = {o.name: o.convert(given[o.name]) for o in CHECK_FIELDS if given.get(o.name) is not None}
    limits = {o.name: o.convert(given[o.name]) for o in LIMITS if given.get(o.name) is not None}
    base = extra.pop("limits", None) or DEFAULT_LIMITS
    return CheckOptions(**{**fields, **extra}, limits=dataclasses.replace(base, **limits))


def api_options(keywords: Mapping[str, Any]) -> Any:
    """The Python API's option keywords (the CLI names with underscores, and `limits=`) → CheckOptions."""
    return make_options(keywords, **({"limits": keywords["limits"]} if keywords.get("limits") is not None else {}))


API_NAMES = frozenset((*(o.name for o in CHECK_FIELDS), *(o.name for o in LIMITS), "limits"))


def split_options(keywords: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """API keywords → (options, variables): a keyword that names an option is that option."""
    options = {k: v for k, v in keywords.items() if k in API_NAMES}
    return options, {k: v for k, v in keywords.items() if k not in API_NAMES}


def split_names(wrt: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """'a,b' or ['a', 'b'] → ('a', 'b'); None stays None."""
    if wrt is None:
        return None
    items = wrt.split(",") if isinstance(wrt, str) else list(wrt)
    if not all(isinstance(s, str) for s in items):
        raise InputError(f"wrt names variables: give 'a,b' or a list of names, not {wrt!r}")
    return tuple(s.strip() for s in items if s.strip())


def split_globs(params: Any) -> tuple[str, ...] | None:
    """'layer.*,head.bias' or a list → globs; None stays None."""
    if params is None:
        return None
    items = params.split(",") if isinstance(params, str) else list(params) if isinstance(params, (list, tuple)) else None
    if items is None or not all(isinstance(s, str) for s in items):
        raise InputError(f"params selects parameters by glob: give 'layer.*,head.bias' or a list, not {params!r}")
    globs = tuple(s.strip() for s in items if s.strip())
    if not globs:
        raise InputError("--params is empty; give at least one glob such as 'layer.*'")
    return globs


# ---- the batch file's view of a row ----

def toml_value(option: Option, value: Any) -> Any:
    """A TOML value for `option`, type-checked (batch files come from strangers), not yet converted."""
    kinds = option.kind.accepts
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise InputError(f"'{option.name}' must be {option.kind.name}, not {type(value).__name__}")
    if option.kind is NAMES and isinstance(value, list) and not all(isinstance(w, str) for w in value):
        raise InputError(f"'{option.name}' must be a string \"a,b\" or a list of names [\"a\", \"b\"]")
    if option.kind is PATHS and not all(isinstance(r, str) for r in value):
        raise InputError(f"{option.name} must be a list of file paths or module names")
    if option.kind is SPEC:
        check_value(option.name, value)
    return value


def check_value(key: str, value: Any) -> None:
    """A value is a number, a (nested) list of numbers, or a SPEC string."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise InputError(f"'{key}' must be a number, a list of numbers or a SPEC string, not {type(item).__name__}")


# ---- variables: one rule for -v, TOML vars and the API ----

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def variable_name(name: Any) -> str:
    """A variable's name as the expression reads it (NFKC, as Python reads α or ﬁ); InputError if it is none."""
    if not isinstance(name, str):
        raise InputError(f"a variable's name must be a string, not {type(name).__name__}")
    name = unicodedata.normalize("NFKC", name.strip())
    if not (_NAME.match(name) or (name.isidentifier() and not name.startswith("_"))) or keyword.iskeyword(name):
        raise InputError(f"{name!r} is not a variable name: use letters, digits and _ (not first), e.g. x or w_1")
    return name


def variable_values(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """(name, value) pairs → {name: value}; a name given twice is refused."""
    values: dict[str, Any] = {}
    for name, value in pairs:
        name = variable_name(name)
        if name in values:
            raise InputError(f"-v {name}= is given twice")
        values[name] = value
    return values


# ---- the replay line ----

def replay_args(options: Any, overrides: Mapping[str, Any] = {}) -> list[str]:
    """The options of a check as command-line arguments, in OPTIONS order (defaults left out)."""
    parts: list[str] = []
    for option in (*CHECK_FIELDS, *LIMITS):
        if option.name in overrides:
            value = overrides[option.name]
        else:
            value = getattr(options.limits if option.where == "limits" else options, option.name)
        parts += option.replay(value)
    return parts


def kind_replay(values: Mapping[str, Any]) -> list[str]:
    """A case kind's options (--optim, --steps, ...) as command-line arguments."""
    return [part for option in KINDS if option.name in values for part in option.replay(values[option.name])]


def spec_text(value: Any) -> str:
    """A value as a SPEC string: strings as given, anything else as a (nested) list."""
    if isinstance(value, str):
        return value
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.size > MAX_REPLAY_ELEMENTS:
        return f"<{array.size} values of shape {list(array.shape)} given from Python>"
    return json.dumps(array.tolist())
