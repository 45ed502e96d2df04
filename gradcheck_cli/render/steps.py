"""`gradcheck steps` views: a text plot of log error against log h (plotext on a terminal when it is
installed), a short table of each method's best step, and the PNG (matplotlib, an optional extra)."""
from __future__ import annotations

import io

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..errors import InputError
from ..steps import METHOD_ORDER, StepCurves

MARKS = {"central": "c", "forward": "f", "richardson": "r", "complex": "i"}
STYLES = {"central": "cyan", "forward": "yellow", "richardson": "magenta", "complex": "green"}
FLOOR = 1e-18  # an error of exactly 0 is drawn here (log axes have no 0)
PLOT_HINT = "--png needs matplotlib, which is not installed: pip install 'gradcheck-cli[plot]' (or pip install matplotlib)"


def _log_errors(c: StepCurves, method: str) -> np.ndarray:
    e = np.asarray(c.curves[method], dtype=np.float64)
    return np.log10(np.where(np.isfinite(e), np.maximum(e, FLOOR), np.nan))


class TextPlot:
    """log10(error) against log10(h), one letter a method, a `|` column at the chosen step, drawn to
    the console's width."""

    def __init__(self, curves: StepCurves, height: int = 18):
        self.c, self.height = curves, height

    def __rich_console__(self, console, options):
        c = self.c
        label_width = 7
        width = max(20, min(options.max_width - label_width - 1, 100))
        lx = np.log10(c.steps)
        ys = {m: _log_errors(c, m) for m in METHOD_ORDER if m in c.curves}
        finite = np.concatenate([y[np.isfinite(y)] for y in ys.values()] or [np.zeros(1)])
        top, bottom = np.ceil(finite.max()), np.floor(finite.min())
        if top == bottom:
            top += 1
        grid = [[" "] * width for _ in range(self.height)]
        styles = [[""] * width for _ in range(self.height)]
        def col(v: float) -> int:
            return int(round((v - lx[0]) / (lx[-1] - lx[0]) * (width - 1)))
        chosen = np.log10(c.chosen_h)
        if lx[0] <= chosen <= lx[-1]:
            for row in range(self.height):
                grid[row][col(chosen)], styles[row][col(chosen)] = "|", "gc.dim"
        for m, y in ys.items():
            for xv, yv in zip(lx, y):
                if np.isfinite(yv):
                    row = int(round((top - yv) / (top - bottom) * (self.height - 1)))
                    grid[row][col(xv)], styles[row][col(xv)] = MARKS[m], STYLES[m]
        for row in range(self.height):
            level = top - row * (top - bottom) / (self.height - 1)
            line = Text(f"{'1e' + format(level, '.0f'):>6} " if row % 3 == 0 else " " * label_width, style="gc.dim")
            for ch, st in zip(grid[row], styles[row]):
                line.append(ch, style=st)
            yield line
        axis = [" "] * width
        for decade in range(int(np.ceil(lx[0])), int(np.floor(lx[-1])) + 1, 3):
            text = f"1e{decade}"
            start = min(col(decade), width - len(text))
            axis[start:start + len(text)] = list(text)
        yield Text(" " * label_width + "".join(axis), style="gc.dim")
        yield Text(" " * label_width + "h (step) →   error ↑ (log scales)", style="gc.dim")

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement
        return Measurement(27, min(options.max_width, 108))


def _plotext(c: StepCurves, width: int) -> str | None:
    """The same plot through plotext 5, when it is installed (used on a terminal); None otherwise
    (plotext 6 rewrote its API: the text plot is drawn instead)."""
    try:
        import plotext as plt
    except ImportError:
        return None
    if not hasattr(plt, "clear_figure"):
        return None
    plt.clear_figure()
    plt.plotsize(min(width, 100), 22)
    plt.xscale("log")
    plt.yscale("log")
    for m in METHOD_ORDER:
        if m in c.curves:
            e = np.asarray(c.curves[m])
            keep = np.isfinite(e)
            plt.plot(list(c.steps[keep]), list(np.maximum(e[keep], FLOOR)), label=m, marker="dot")
    if c.steps[0] <= c.chosen_h <= c.steps[-1]:
        plt.vline(c.chosen_h)
    decades = [10.0**k for k in range(-16, 0, 3)]
    plt.xticks(decades, [f"1e{k}" for k in range(-16, 0, 3)])
    errors = np.concatenate([np.asarray(e)[np.isfinite(e)] for e in c.curves.values()])
    top = int(np.ceil(np.log10(max(errors.max(initial=FLOOR), FLOOR))))
    plt.yticks([10.0**k for k in range(-18, top + 1, 3)], [f"1e{k}" for k in range(-18, top + 1, 3)])
    plt.theme("clear")
    plt.title(f"|estimate - reference| against h, d/d{c.element}")
    return plt.build()


def best_table(c: StepCurves) -> Table:
    """Per method: the best step on the grid and its error."""
    table = Table(show_edge=False, pad_edge=False, title=Text("best step of each method", style="gc.head"),
                  title_justify="left")
    for header in ("method", "mark", "best h", "error there", "error at h=1e-8"):
        table.add_column(header, justify="left" if header in ("method", "mark") else "right", no_wrap=True)
    at = int(np.argmin(np.abs(np.log10(c.steps) + 8)))
    for m in METHOD_ORDER:
        if m not in c.curves:
            continue
        e = np.asarray(c.curves[m])
        k = int(np.nanargmin(np.where(np.isfinite(e), e, np.inf)))
        table.add_row(m, Text(MARKS[m], style=STYLES[m]), f"{c.steps[k]:.1e}", f"{e[k]:.1e}", f"{e[at]:.1e}")
    return table


def steps_view(c: StepCurves, terminal: bool = False, width: int = 80) -> RenderableType:
    """The whole report: what is plotted, the plot, the best steps, the chosen step."""
    exact = f"exact {c.exact:.12g} (sympy)" if c.exact is not None else f"reference {c.reference:.12g} ({c.reference_kind})"
    head = [Text.assemble(("gradcheck steps ", "gc.head"), f"d/d{c.element} at {c.element} = {c.value:.6g}"),
            Text(f"{exact}; autograd {c.analytic:.12g}", style="gc.dim"),
            Text("error = |estimate − " + ("exact" if c.exact is not None else "reference") + "|: truncation "
                 "falls with h, rounding grows as eps/h; the bottom of the V is the best step", style="gc.dim")]
    plotted = _plotext(c, width) if terminal else None
    plot = Text.from_ansi(plotted) if plotted else TextPlot(c)
    legend = Text("  ".join(f"{MARKS[m]} {m}" for m in METHOD_ORDER if m in c.curves) + "   | the chosen step",
                  style="gc.dim")
    chosen = Text(f"gradcheck's step: method {c.chosen_method}, h = {c.chosen_h:.1e} ({c.chosen_note})")
    if not c.steps[0] <= c.chosen_h <= c.steps[-1]:
        chosen.append(f"; outside the plotted range {c.steps[0]:.0e}..{c.steps[-1]:.0e}", style="gc.dim")
    return Group(*head, Text(""), plot, legend, Text(""), best_table(c), Text(""), chosen)


def steps_png(c: StepCurves) -> bytes:
    """The V as a PNG. Raises InputError without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(PLOT_HINT) from None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        for m in METHOD_ORDER:
            if m in c.curves:
                e = np.asarray(c.curves[m], dtype=np.float64)
                keep = np.isfinite(e)
                ax.loglog(c.steps[keep], np.maximum(e[keep], FLOOR), marker=".", label=m)
        if c.steps[0] <= c.chosen_h <= c.steps[-1]:
            ax.axvline(c.chosen_h, color="gray", linestyle="--", label=f"chosen: {c.chosen_method}, h={c.chosen_h:.1e}")
        else:
            ax.plot([], [], " ", label=f"chosen: {c.chosen_method}, h={c.chosen_h:.0e} (off the plot)")
        against = "exact (sympy)" if c.exact is not None else c.reference_kind
        ax.set_xlabel("step h")
        ax.set_ylabel(f"|estimate − {against}|")
        ax.set_title(f"finite-difference error of d/d{c.element} at {c.element} = {c.value:.4g}")
        ax.grid(True, which="major", alpha=0.3)
        ax.text(0.99, 0.01, f"an error of exactly 0 is drawn at {FLOOR:g}", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8, color="gray")
        ax.legend(loc="best", fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()
