"""ModuleResult → a rich renderable: check's view, with parameters listed as inputs are."""
from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from .safe import visible
from .table import DEFAULT_ROWS, Note, _num, gradient_table, graph_tree, replay_line, verdict_line


def module_view(result, max_rows: int = DEFAULT_ROWS) -> RenderableType:
    """The whole report of one module check."""
    mode = "train" if result.train else "eval"
    loss = f"  loss {visible(result.loss)}" if result.loss is not None else ""
    parts: list[RenderableType] = [
        Text.assemble(("gradcheck module ", "gc.head"), visible(result.module), f"  ({mode} mode){loss}"),
        Text(f"output shape {list(result.output_shape)}"
             + (f", value {_num(float(result.output_value.reshape(-1)[0]))}" if result.output_value.size == 1 else ""),
             style="gc.dim"),
    ]
    listed = [("buffers (constants, restored before every evaluation)",
               [f"{n} {list(s)}" for n, s in result.buffers.items()]),
              ("frozen (requires_grad=False)", list(result.frozen)),
              ("unused (the output does not depend on them)", list(result.unused)),
              ("not selected by --params", list(result.skipped)),
              ("constants", list(result.constants))]
    for heading, names in listed:
        if names:
            parts.append(Note(f"{heading}: {', '.join(visible(n) for n in names)}", "gc.dim"))
    for heading, group in (("parameters", result.parameters), ("inputs", result.inputs)):
        if group:
            parts.append(Text(f"\n{heading}", style="gc.head"))
            for name, r in group.items():
                parts.append(gradient_table(r, result.mode, max_rows))
                if name in result.reasons and result.reasons[name] == "gets no gradient":
                    parts.append(Note(f"{name} gets no gradient (autograd gives None) although the output depends "
                                      "on it numerically: a .detach(), torch.no_grad() or a backward returning "
                                      "None cuts it off", "gc.fail"))
    if not result.parameters and not result.inputs:
        parts.append(Text("\nno parameter gets a gradient and none is needed", style="gc.dim"))
    if result.blame:
        parts += [Text(""), Note(result.blame, "gc.fail")]
    parts += [Text(""), graph_tree(result.graph), Text(""), verdict_line(result), replay_line(result.replay),
              Text(", ".join(f"{k} {v}" for k, v in result.versions.items()), style="gc.dim")]
    return Group(*parts)
