"""`gradcheck module FILE.py:NAME --init "k=v, ..."`: find the module class or factory and build it.

The file is loaded as a plugin file is (plugins.load_module: code, trusted because the user named it);
`--init` is parsed with a whitelist over Python's ast (numbers, strings, True/False/None, lists and
tuples of those; never eval'd) and passed as keyword arguments to the class. A factory (a function of
no arguments) takes no `--init`. Either is built right after torch.manual_seed(seed), so the initial
parameters are the same for the same seed.
"""
from __future__ import annotations

import ast
import inspect
import os
from typing import Any, Mapping

from .errors import InputError
from .parse import quiet_parse

MAX_INIT_LENGTH = 10_000   # characters of --init
MAX_INIT_DEPTH = 20        # nesting of lists/tuples in --init


def split_ref(ref: Any) -> tuple[str, str]:
    """'model.py:Model' → ('model.py', 'Model'). Raises InputError."""
    if not isinstance(ref, str):
        raise InputError(f"the module must be given as FILE.py:NAME, not {type(ref).__name__}")
    path, sep, name = ref.rpartition(":")
    if not sep or not path or not name:
        raise InputError(f"expected FILE.py:NAME (e.g. model.py:Model), got {ref!r}")
    if not path.endswith(".py"):
        raise InputError(f"expected a Python file before ':' (FILE.py:NAME), got {path!r}")
    if not name.isidentifier():
        raise InputError(f"'{name}' after ':' is not a Python name; expected FILE.py:NAME, e.g. model.py:Model")
    return path, name


def parse_init(text: Any) -> dict[str, Any]:
    """--init "in_feature=1, out_feature=3" → {'in_feature': 1, 'out_feature': 3}; never evaluated.

    A dict (a batch file's `init = {...}`, or the Python API) is type-checked the same way.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        out = {}
        for key, value in text.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise InputError(f"init: {key!r} is not a keyword argument name")
            out[key] = _checked_literal(value, key, 0)
        return out
    if not isinstance(text, str):
        raise InputError(f"--init must be text such as \"in_feature=1, out_feature=3\", not {type(text).__name__}")
    if len(text) > MAX_INIT_LENGTH:
        raise InputError(f"--init is longer than {MAX_INIT_LENGTH:,} characters")
    source = text.strip()
    if not source:
        return {}
    wrapped = f"f({source})"
    try:
        tree = quiet_parse(wrapped, "eval")
    except SyntaxError as err:
        col = max(0, min(len(source), (err.offset or 3) - 3))
        raise InputError(f"--init is not keyword=value, ...: {err.msg}", source, 1, col, col + 1) from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id != "f" \
            or _span_end(call) != len(wrapped):
        raise InputError("--init must be keyword=value pairs separated by commas, e.g. \"in_feature=1, out_feature=3\"",
                         source, 1, 0, len(source))
    if call.args:
        node = call.args[0]
        raise InputError("--init takes keyword arguments only (name=value)", source, 1, node.col_offset - 2,
                         _span_end(node) - 2)
    out: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise InputError("**kwargs is not allowed in --init", source, 1, kw.col_offset - 2, _span_end(kw) - 2)
        if kw.arg in out:
            raise InputError(f"'{kw.arg}' is given twice in --init", source, 1, kw.col_offset - 2, _span_end(kw) - 2)
        out[kw.arg] = _literal(kw.value, source, 0)
    return out


def _span_end(node: ast.AST) -> int:
    return getattr(node, "end_col_offset", None) or getattr(node, "col_offset", 0) + 1


def _literal(node: ast.expr, source: str, depth: int) -> Any:
    """Numbers, strings, True/False/None, and lists or tuples of them (the whitelist)."""
    if depth > MAX_INIT_DEPTH:
        raise InputError(f"--init nests deeper than {MAX_INIT_DEPTH}", source, 1, node.col_offset - 2,
                         _span_end(node) - 2)
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
        if isinstance(node.value, int) and not isinstance(node.value, bool) and abs(node.value) > 2**62:
            raise InputError("this integer is too large", source, 1, node.col_offset - 2, _span_end(node) - 2)
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)) \
            and not isinstance(node.operand.value, bool):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.List):
        return [_literal(e, source, depth + 1) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, source, depth + 1) for e in node.elts)
    raise InputError("--init values must be literals: numbers, strings, True/False/None, lists or tuples",
                     source, 1, max(0, node.col_offset - 2), max(1, _span_end(node) - 2))


def _checked_literal(value: Any, key: str, depth: int) -> Any:
    if depth > MAX_INIT_DEPTH:
        raise InputError(f"init.{key} nests deeper than {MAX_INIT_DEPTH}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_checked_literal(v, key, depth + 1) for v in value)
    raise InputError(f"init.{key} must be a literal (number, string, bool, list), not {type(value).__name__}")


def load_module_object(ref: str, base_dir: str | None = None) -> tuple[Any, str]:
    """The class or factory NAME of FILE.py (relative to base_dir when given): (object, path)."""
    path, name = split_ref(ref)
    full = os.path.join(base_dir, path) if base_dir and not os.path.isabs(path) else path
    if not os.path.isfile(full):
        raise InputError(f"module file not found: {full}")
    from .plugins import load_module
    module = load_module(full)
    if not hasattr(module, name):
        found = sorted(n for n, v in vars(module).items() if _is_module_class(v) and not n.startswith("_"))
        hint = f"; it defines: {', '.join(found)}" if found else "; it defines no nn.Module subclass"
        raise InputError(f"{full} has no '{name}'{hint}")
    return getattr(module, name), full


def _is_module_class(value: Any) -> bool:
    import torch
    return inspect.isclass(value) and issubclass(value, torch.nn.Module)


def build_module(target: Any, name: str, init: Mapping[str, Any], seed: int) -> Any:
    """The module: `target(**init)` for a class, `target()` for a factory, after torch.manual_seed(seed)."""
    import torch
    is_class = _is_module_class(target)
    if isinstance(target, torch.nn.Module):  # built already, outside --seed: name what builds it instead
        raise InputError(f"'{name}' is an nn.Module instance; name its class ({type(target).__name__}, with "
                         "--init for its arguments) or a function of no arguments that returns the module")
    if not is_class and (inspect.isclass(target) or not callable(target)):
        raise InputError(f"'{name}' is not an nn.Module subclass or a function returning a module "
                         f"(it is {type(target).__name__ if not inspect.isclass(target) else 'a class ' + target.__name__})")
    if not is_class and init:
        raise InputError(f"'{name}' is a factory function; --init is for an nn.Module class's arguments")
    if is_class:
        _check_init_keywords(target, name, init)
    else:
        _check_factory(target, name)
    torch.manual_seed(seed)
    try:
        built = target(**init)
    except InputError:
        raise
    except Exception as err:  # the user's constructor refused its arguments: their input, said in one line
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(f"building {name}({_call_text(init)}) raised {type(err).__name__}: {text}") from None
    if not isinstance(built, torch.nn.Module):
        raise InputError(f"'{name}()' returned {type(built).__name__}, not an nn.Module")
    return built


def _check_factory(factory: Any, name: str) -> None:
    """A factory is called with no arguments: one that requires some is refused before it runs."""
    try:
        required = [p.name for p in inspect.signature(factory).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):  # no signature to read (a builtin): calling it will say
        return
    if required:
        raise InputError(f"'{name}' is a function that requires {', '.join(repr(r) for r in required)}; a factory "
                         "is called with no arguments (name an nn.Module class and give --init, or wrap the call "
                         "in a function of no arguments)")


def _check_init_keywords(cls: type, name: str, init: Mapping[str, Any]) -> None:
    """Unknown or missing keyword arguments, said before the constructor runs."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in init if k not in names]
    if unknown:
        raise InputError(f"--init names '{unknown[0]}', which {name}.__init__ does not take; it takes: "
                         f"{', '.join(names) or 'no arguments'}")
    missing = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in init]
    if missing:
        raise InputError(f"{name}.__init__ needs {', '.join(missing)}; give --init \"{missing[0]}=...\"")


def _call_text(init: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in init.items())


def init_text(init: Mapping[str, Any]) -> str:
    """The --init text that builds the same module (for the replay line)."""
    return _call_text(init)


def load(ref: str, init: Any, seed: int, base_dir: str | None = None) -> tuple[Any, str]:
    """FILE.py:NAME built with --init under --seed: (module, the file's path)."""
    target, path = load_module_object(ref, base_dir)
    return build_module(target, split_ref(ref)[1], parse_init(init), seed), path


def replay_command(label: str, request: Any, values: Mapping[str, Any], arg_names: list[str],
                   loss_names: list[str], options: Any, method: str) -> str:
    """The command that reproduces a module check: the module's options and the check's, from their
    schema rows (options.py), the method as the check resolved it."""
    import shlex

    from .options import BY_NAME, replay_args, spec_text
    parts = ["gradcheck", "module", label, *BY_NAME["init"].replay(request.init or None)]
    for name in [*arg_names, *(n for n in loss_names if n not in arg_names)]:
        if name in values:
            parts += ["-v", f"{name}={spec_text(values[name])}"]
    for name in ("loss", "params", "wrt_inputs", "train"):
        parts += BY_NAME[name].replay(getattr(request, name))
    parts += replay_args(options, {"method": method})
    return " ".join(shlex.quote(p) for p in parts)
