"""The command line: options → library call → renderer → exit status. No numerics here."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any, Callable

import click

from .errors import ExitStatus, InputError
from .files import DEFAULT_MAX_FILE_BYTES

class VarSpec(click.ParamType):
    """NAME=SPEC → (name, spec text); the SPEC itself is read by the library."""

    name = "NAME=SPEC"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        from .options import variable_name
        name, sep, spec = value.partition("=")
        try:
            name = variable_name(name) if sep else None
        except InputError:
            name = None
        if name is None:
            self.fail(f"expected NAME=SPEC such as a=2,3 or w=randn(3,4), got {value!r}", param, ctx)
        return name, spec


class DtypeList(click.ParamType):
    """float64 or a comma list such as float64,float32,bfloat16."""

    name = "DTYPE[,DTYPE...]"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        from .options import DTYPES
        items = tuple(dict.fromkeys(v.strip() for v in str(value).split(",") if v.strip()))
        unknown = [v for v in items if v not in DTYPES]
        if unknown or not items:
            self.fail(f"{unknown[0] if unknown else value!r} is not a dtype; use {', '.join(DTYPES)}", param, ctx)
        return items


class UserError(click.ClickException):
    """An InputError at the edge: one message line, the source line and a caret row; exit 2."""

    exit_code = ExitStatus.BAD_INPUT

    def __init__(self, error: InputError):
        super().__init__(error.message)
        self.error = error

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.error.format()}", err=True)


class ExpressionCommand(click.Command):
    """Lets EXPR begin with a minus, as in `gradcheck check "-log(p).mean()"`.

    A token like "-log(p)" is not an option of this command, so it is moved behind "--", where
    click takes it as the positional EXPR.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value, names = set(), set(self.get_help_option_names(ctx))
        for param in self.params:
            if isinstance(param, click.Option):
                names.update(param.opts)
                if not param.is_flag and not param.count:
                    takes_value.update(param.opts)
        out: list[str] = []
        moved: list[str] = []
        expect_value = False
        for position, token in enumerate(args):
            if token == "--":
                out.extend(args[position:])
                break
            if expect_value:
                out.append(token)
                expect_value = False
                continue
            is_option = token in names or token[:2] in names or token.startswith("--")
            if token.startswith("-") and len(token) > 1 and not is_option and not moved:
                moved.append(token)
                continue
            out.append(token)
            expect_value = token in takes_value
        return super().parse_args(ctx, out + (["--", *moved] if moved else []))


def _click_option(option: Any, command: str | None = None) -> Callable:
    """One schema row (options.OPTIONS) as a click option (of `command`, where it may be required)."""
    tag = option.kind.tag
    kw: dict[str, Any] = {"help": option.help, "required": command in option.required}
    if option.metavar:
        kw["metavar"] = option.metavar
    if tag == "flag":
        kw["is_flag"] = True
    elif tag == "paths":
        kw["multiple"] = True
    elif tag == "dtypes":
        kw["type"] = DtypeList()
    elif tag == "int":
        kw["type"] = click.IntRange(*option.bounds) if option.bounds else int
    elif tag == "number":
        kw["type"] = float
    elif tag == "text" and option.choices:
        kw["type"] = click.Choice(option.choices)
    if tag not in ("flag", "paths") and not (kw["required"] and option.default is None):
        kw["default"] = option.default  # (click >= 8.2 takes a given None default as satisfying `required`)
        kw["show_default"] = option.default is not None
    return click.option(*option.flags, option.name, **kw)


def _schema_options(*groups: str, first: Callable | None = None,
                    command: str | None = None) -> Callable[[Callable], Callable]:
    """A decorator: the schema's options of these groups, in schema order (after `first`)."""
    def decorate(fn: Callable) -> Callable:
        from .options import in_group
        for option in reversed(in_group(*groups)):
            fn = _click_option(option, command)(fn)
        return first(fn) if first else fn
    return decorate


def _var_option(fn: Callable) -> Callable:
    return click.option("-v", "--var", "variables", type=VarSpec(), multiple=True,
                        help="A variable's value: 2 | 2,3 | [[1,2],[3,4]] | randn(3,4) | rand(2) | ones(2,2) "
                             "| zeros(3). Unnamed variables get a random scalar in [0.5, 1.5).")(fn)


# Shared options, generated from the schema (options.GROUPS says which commands take which).
expression_options = _schema_options("expression", "limits", first=_var_option)  # -v, --seed, --dtype, ...
grad_output_option = _schema_options("grad_output")
wrt_option = _schema_options("wrt")
method_options = _schema_options("method")              # --method and --eps
check_options = _schema_options("check", "method", "grad_output", "wrt")  # the gradient options of `check`
accumulate_option = _schema_options("accumulate")
step_options = _schema_options("optim", "step", command="step")  # --optim (required), --steps, --recompute


def module_options(fn: Callable) -> Callable:
    """--init, --loss, --params, --wrt-inputs, --train/--eval, then --optim and --steps."""
    return _schema_options("module")(_schema_options("optim")(fn))


def format_options(kind: str, help_text: str = "Output format.") -> Callable[[Callable], Callable]:
    """--format (the renderers registered for this result kind, render/__init__.py) and --json."""
    def decorate(fn: Callable) -> Callable:
        from .render import formats
        fn = click.option("--json", "as_json", is_flag=True, help="Short for --format json.")(fn)
        return click.option("--format", "fmt", type=click.Choice(formats(kind)), default="table",
                            show_default=True, help=help_text)(fn)
    return decorate


format_option = format_options("check")


def _show(kind: str, fmt: str, result: Any, crop: bool = False, **view: Any) -> None:
    """Render a result through the registry: text goes to stdout as it is, a renderable to the console."""
    from .render import View, render
    console = _console() if fmt == "table" else None
    if console is not None and kind == "steps":
        view.update(terminal=console.is_terminal and not console.no_color, width=console.width)
    output = render(kind, fmt, result, View(**view))
    if isinstance(output, str):
        click.echo(output, nl=False)
    else:
        (console or _console()).print(output, crop=crop)  # crop=False: the replay line stays whole


def explain_option(fn: Callable) -> Callable:
    return click.option("--explain", is_flag=True,
                        help="Beside each grad_fn node: the local derivative rule it applies and the gradient "
                             "flowing into it for these values, to follow the chain rule by eye.")(fn)


def _options(kw: dict[str, Any]):
    """Click keyword arguments → CheckOptions (the library's own type); other keywords are ignored."""
    from .options import make_options
    return make_options(kw)


def _values(variables: tuple[tuple[str, str], ...]) -> dict[str, str]:
    from .options import variable_values
    return variable_values(variables)


def _console(stderr: bool = False):
    from rich.console import Console
    from .render.table import THEME
    stream = sys.stderr if stderr else sys.stdout
    # piped output is read by people too: give tables room instead of rich's 80-column fallback
    width = None if stream.isatty() or "COLUMNS" in os.environ else 120
    return Console(theme=THEME, stderr=stderr, highlight=False, width=width)


# What the report's own symbols become on a stream that cannot encode them (PYTHONIOENCODING=ascii,
# LANG=C on an old system); anything else is written as a \\uXXXX escape.
_ASCII_FALLBACK = {"→": "->", "·": "*", "−": "-", "²": "^2", "³": "^3", "×": "x", "≈": "~=", "±": "+-",
                   "≤": "<=", "≥": ">=", "δ": "d", "Σ": "sum", "…": ".", "—": "--", "–": "-", "§": "S"}


def _ascii_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    text = err.object[err.start:err.end]
    return "".join(_ASCII_FALLBACK.get(c, c.encode("ascii", "backslashreplace").decode()) for c in text), err.end


def _safe_streams() -> None:
    """Let stdout and stderr print on any encoding: a symbol they cannot encode gets a fallback."""
    import codecs
    codecs.register_error("gradcheck-fallback", _ascii_fallback)
    for stream in (sys.stdout, sys.stderr):
        try:
            "−≤·".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="gradcheck-fallback")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gradcheck-cli", prog_name="gradcheck")
def main() -> None:
    """Tell whether a gradient is right: PyTorch autograd against an independent numpy
    finite-difference engine, element by element.

    \b
    Example:
      gradcheck check "3*a**3 - b**2" -v a=2,3 -v b=6,4 --grad-output 1,1
    """
    _safe_streams()


def _guard(fn: Callable) -> Callable:
    """Turn InputError into exit 2 with the caret message; nothing broader is caught."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            raise UserError(err) from None
    return run


@main.command(cls=ExpressionCommand)
@click.argument("expr")
@expression_options
@check_options
@format_option
@click.option("--rows", type=click.IntRange(min=0), default=20, show_default=True,
              help="Elements shown per variable in the table (the worst first); 0 shows all.")
@explain_option
@accumulate_option
@_guard
def check(expr: str, variables: tuple, fmt: str, as_json: bool, rows: int, explain: bool, accumulate: int | None,
          **kw: Any) -> None:
    """Check the gradient of EXPR: analytic (autograd) against numeric (finite differences).

    Exit status: 0 all gradients agree, 1 some disagree, 2 bad input.

    \b
    Example:
      gradcheck check "3*a**3 - b**2" -v a=2,3 -v b=6,4 --grad-output 1,1
      gradcheck check "y = x + 2; z = y*y*3; z.mean()" -v x="ones(2,2)" --json
    """
    dtypes = kw["dtype"]
    if accumulate and len(dtypes) > 1:
        raise InputError("--accumulate runs one dtype; give --dtype a single value")
    fmt = "json" if as_json else fmt
    if len(dtypes) > 1:
        from .ladder import run_ladder
        ladder = run_ladder(expr, _values(variables), _options(kw), dtypes)
        _show("ladder", fmt, ladder, rows=rows)
        sys.exit(ladder.exit_status)
    if accumulate:
        from .accumulate import run_accumulate
        result = run_accumulate(expr, _values(variables), _options(kw), accumulate)
        _show("accumulate", fmt, result, rows=rows)
        sys.exit(result.exit_status)
    from .api import build_graph, run_check
    options = _options(kw)
    with _stdout_to_stderr(bool(kw["plugins"])):  # a plugin's prints must not break the report (or its JSON)
        result = run_check(expr, _values(variables), options)
        dag = build_graph(expr, _values(variables), options, explain=True) if explain else None
    _show("check", fmt, result, rows=rows, explain=dag)
    sys.exit(ExitStatus.OK if result.ok else ExitStatus.MISMATCH)


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@format_options("batch", "Report format; github prints workflow annotations.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Also write a JUnit XML report to this file "
              "(a regular file, written whole; anything else there is refused).")
@click.option("--plugin", "plugins", multiple=True, metavar="FILE.py|module",
              help="Custom ops for every case; a batch file may also name this same file.")
@click.option("--trust-plugins", is_flag=True, help="Load plugin code that the batch files name (it runs with "
              "your rights). Without it, such a case is an error unless the file is also given with --plugin.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (at most what the machine's cores and memory allow); the report is the "
                   "same for any value.")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds a case may run before it becomes an error (0: no limit).")
@click.option("--max-file-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_FILE_BYTES, show_default=True,
              help="Larger batch files are refused unread.")
@click.option("--rows", type=click.IntRange(min=0), default=20, show_default=True,
              help="Rows shown per variable of a failing case; 0 shows all.")
@_guard
def batch(paths: tuple[str, ...], fmt: str, as_json: bool, junit: str | None, plugins: tuple[str, ...],
          trust_plugins: bool, jobs: int, timeout: float, max_file_bytes: int, rows: int) -> None:
    """Check every case in batch files: TOML ([[case]] tables) or txt (one `check` argument list a line).

    Folders are searched recursively for *.toml and *.txt. Exit status: 0 every case checked and
    passed, 1 any fail, 2 any error (the other cases are still run and reported), a missing PATH or
    one that holds no case.

    \b
    Example:
      gradcheck batch expressions/ --junit report.xml
    """
    from .batch import batch_files, check_timeout, run_batch
    from .pool import clamp_jobs
    fmt = "json" if as_json else fmt
    timeout = check_timeout(timeout)
    if junit:  # refused before any case runs, and checked again when written
        from .files import check_target
        check_target(junit, batch_files(paths))
    jobs, note = clamp_jobs(jobs)
    if note:
        click.echo(f"note: {note}", err=True)
    with _progress(enabled=fmt == "table") as advance:
        result = run_batch(paths, plugins, jobs, timeout, progress=advance, trust_plugins=trust_plugins,
                           max_bytes=max_file_bytes)
    from .render.safe import visible
    for problem in result.problems:
        click.echo(f"error: {visible(problem)}", err=True)
    if junit:
        from .files import write_atomic
        from .render import render
        write_atomic(junit, render("batch", "junit", result), batch_files(paths))
    _show("batch", fmt, result, rows=rows)
    sys.exit(result.exit_status)


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool):
    """While plugin code runs: its prints, Python-level and C-level (fd 1), go to stderr."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 at all: nothing to protect
        saved = None
    if saved is not None:
        sys.stderr.flush()
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 1)
            os.close(saved)


@contextlib.contextmanager
def _progress(enabled: bool):
    """A rich progress bar on a terminal; nothing when output is piped or machine-readable."""
    if not enabled or not sys.stdout.isatty():
        yield None
        return
    import time
    from rich.progress import Progress
    # no refresh thread: -j forks its workers, which is safe only while this process runs one thread
    with Progress(transient=True, console=_console(), auto_refresh=False) as bar:
        task = bar.add_task("checking", total=None)
        shown = 0.0

        def advance(case: Any) -> None:
            nonlocal shown
            bar.advance(task)
            if time.monotonic() - shown >= 0.1:  # at most ten redraws a second
                bar.refresh()
                shown = time.monotonic()
        yield advance


@main.command(cls=ExpressionCommand)
@click.argument("expr")
@expression_options
@step_options
@check_options
@format_option
@click.option("--rows", type=click.IntRange(min=0), default=20, show_default=True,
              help="Elements shown per parameter and step (failing first); 0 shows all.")
@_guard
def step(expr: str, variables: tuple, optim: str, steps: int, recompute: bool, fmt: str, as_json: bool,
         rows: int, **kw: Any) -> None:
    """Run optimizer steps on the loss EXPR in torch beside a numpy implementation of the optimizer's
    documented update rule fed with the numeric gradient, and compare them step by step.

    --wrt picks the parameters stepped; --method, --eps, --atol, --rtol, --dtype, --allow-unreliable act
    as for check; --grad-output, --order 2, --fast and --symbolic do not apply. Exit status: 0 every step
    agrees, 1 the trajectories part (the first step and element is named), 2 bad input.

    \b
    Example:
      gradcheck step "w[0]**2 + 2*w[1]**2" -v w=0.5,0.5 --optim "SGD(lr=0.01)"
      gradcheck step "w[0]**2 + 2*w[1]**2" -v w=0.5,0.5 --optim "SGD(lr=0.01, momentum=0.1)" --steps 2 --no-recompute
      gradcheck step "(w**2).sum()" -v w=1,-2 --optim "Adam(lr=0.1, amsgrad=True)" --steps 5 --json
    """
    from .stepping import StepOptions, run_step
    if len(kw["dtype"]) > 1:
        raise InputError("gradcheck step runs one dtype; give --dtype a single value")
    result = run_step(expr, _values(variables), StepOptions(optim, steps, recompute, _options(kw)))
    _show("step", "json" if as_json else fmt, result, rows=rows)
    sys.exit(result.exit_status)


@main.command(cls=ExpressionCommand)
@click.argument("expr")
@expression_options
@grad_output_option
@wrt_option
@click.option("--dot", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the graph as Graphviz DOT to this file ('-': DOT alone on stdout).")
@click.option("--svg", type=click.Path(dir_okay=False), help="Draw it as SVG (needs Graphviz's dot).")
@click.option("--png", type=click.Path(dir_okay=False), help="Draw it as PNG (needs Graphviz's dot).")
@explain_option
@format_option
@_guard
def graph(expr: str, variables: tuple, dot: str | None, svg: str | None, png: str | None, explain: bool,
          fmt: str, as_json: bool, **kw: Any) -> None:
    """Show the grad_fn graph autograd records for EXPR: each node once (a node two ops use has two
    edges), named by the intermediate it outputs, with shape and dtype; inputs that get no gradient
    (detach, constants) are marked. Edges point the way gradients flow, from the output to the leaves.

    \b
    Example:
      gradcheck graph "y = x * 2; z = y * y; z.sum()" -v x=1,2 --explain
      gradcheck graph "3*a**3 - b**2" -v a=2,3 -v b=6,4 --dot graph.dot
    """
    from .api import build_graph
    from .graph import render_dot, to_dot
    dag = build_graph(expr, _values(variables), _options(kw), explain)
    text = to_dot(dag, expr)
    pictures = [(path, fmt) for path, fmt in ((svg, "svg"), (png, "png")) if path]
    drawn = [(path, render_dot(text, fmt, f"--{fmt}")) for path, fmt in pictures]  # all or nothing
    from .files import write_atomic
    for path, data in drawn:
        write_atomic(path, data)
    if dot == "-":
        click.echo(text, nl=False)
        return
    if dot:  # before printing: an unwritable path is bad input, reported alone
        write_atomic(dot, text)
    _show("graph", "json" if as_json else fmt, dag, crop=True, title=f"grad_fn graph of {expr}", expression=expr)


@main.command(cls=ExpressionCommand)
@click.argument("expr")
@expression_options
@click.option("--element", metavar="NAME[INDEX]",
              help="The element to follow, e.g. x[1] or w[0, 2] (default: the one that disagrees most).")
@grad_output_option
@wrt_option
@method_options
@click.option("--png", type=click.Path(dir_okay=False), help="Also draw the plot as PNG (needs matplotlib).")
@format_option
@_guard
def steps(expr: str, variables: tuple, element: str | None, png: str | None, fmt: str, as_json: bool,
          **kw: Any) -> None:
    """The error of central, forward, Richardson and complex-step differences against the step h
    (1e-16 to 1e-1) for one element: the V of truncation against rounding, with gradcheck's step marked.

    \b
    Example:
      gradcheck steps "sin(x).sum()" -v x=1,2 --element "x[1]"
    """
    from .steps import step_curves
    curves = step_curves(expr, _values(variables), _options(kw), element)
    if png:
        from .files import write_atomic
        from .render.steps import steps_png
        write_atomic(png, steps_png(curves))
    _show("steps", "json" if as_json else fmt, curves, crop=True)


@main.command()
@click.option("--plugin", "plugins", multiple=True, metavar="FILE.py|module", help="Also list these custom ops.")
@format_option
@_guard
def ops(plugins: tuple[str, ...], fmt: str, as_json: bool) -> None:
    """List the functions an expression may use, from the op table.

    \b
    Example:
      gradcheck ops
    """
    from .api import load_table
    from .ops import listing
    _show("ops", "json" if as_json else fmt, listing(load_table(plugins)), crop=True)


@main.command(name="module")
@click.argument("target", metavar="FILE.py:NAME")
@module_options
@expression_options
@check_options
@format_options("module")
@click.option("--rows", type=click.IntRange(min=0), default=20, show_default=True,
              help="Elements shown per parameter in the table (the worst first); 0 shows all.")
@_guard
def module_command(target: str, init: str | None, loss: str | None, params: str | None, wrt_inputs: bool,
                   train: bool, optim: str | None, steps: int, variables: tuple, fmt: str, as_json: bool,
                   rows: int, **kw: Any) -> None:
    """Check every parameter gradient of an nn.Module: NAME in FILE.py is an nn.Module subclass (built
    with --init) or a function of no arguments returning one, built right after torch.manual_seed(--seed).

    -v gives forward's arguments by name and the other names --loss uses. Buffers are constants,
    restored (and the RNG reseeded) before every evaluation. Exit status: 0 every gradient agrees,
    1 some disagree or a parameter gets no gradient it needs, 2 bad input.

    \b
    Example:
      gradcheck module expressions/model.py:Model --init "in_feature=1, out_feature=3" -v x="randn(2,1)" --loss "(out - label).mean()" -v label="[[0],[0]]"
      gradcheck module expressions/model.py:Model -v x="randn(2,1)" --loss "out.pow(2).mean()" --optim "Adam(lr=1e-3)" --steps 3
    """
    from .module import ModuleRequest, run_module_check
    from .module_load import load
    from .options import split_globs
    if len(kw["dtype"]) > 1:
        raise InputError("gradcheck module runs one dtype; give --dtype a single value")
    if kw.get("wrt"):
        raise InputError("gradcheck module chooses what is checked with --params and --wrt-inputs, not --wrt")
    options = _options(kw)
    request = ModuleRequest(loss=loss, params=split_globs(params), wrt_inputs=wrt_inputs, train=train,
                            label=target, init=init or "")
    with _stdout_to_stderr(True):  # the module file's prints must not break the report (or its JSON)
        built, _ = load(target, init, options.seed)
        if optim is not None:
            from .module_step import run_module_step
            stepped = run_module_step(built, _values(variables), options, request, optim, steps)
        else:
            result = run_module_check(built, _values(variables), options, request)
    fmt = "json" if as_json else fmt
    if optim is not None:
        _show("step", fmt, stepped, rows=rows)
        sys.exit(stepped.exit_status)
    _show("module", fmt, result, rows=rows)
    sys.exit(ExitStatus.OK if result.ok else ExitStatus.MISMATCH)
