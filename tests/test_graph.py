"""`gradcheck graph`: the grad_fn DAG as autograd has it (each node once, one edge per next_functions
entry), named intermediates, shapes and dtypes, inputs without gradient marked; DOT, SVG, PNG; and
`--explain`: the local rule of each node and the gradient flowing into it, against torch's own."""
from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from gradcheck_cli import graph as graph_module
from gradcheck_cli.ops import OPS, functions
from gradcheck_cli.parse import parse
from gradcheck_cli.rules import GENERIC, RULES, rule

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")

_NODE = re.compile(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
_EDGE = re.compile(r"^\s*(n\d+) -> (n\d+)(?: \[(.*)\])?;$")


def parse_dot(dot: str) -> tuple[dict[str, tuple[list[str], str]], list[tuple[str, str, str]]]:
    """A tiny parser for the DOT we write: {node: (label lines, attributes)}, [(from, to, attributes)].
    Every line between the braces must be a node, an edge or a graph attribute."""
    lines = dot.strip().splitlines()
    assert lines[0] == "digraph grad_fn {" and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if m := _NODE.match(line):
            nodes[m.group(1)] = (m.group(2).replace('\\"', '"').split("\\n"), m.group(3))
        elif m := _EDGE.match(line):
            edges.append((m.group(1), m.group(2), m.group(3) or ""))
        else:
            assert re.match(r"^\s*(rankdir|node|edge|label)\b", line), line
    assert all(a in nodes and b in nodes for a, b, _ in edges)
    return nodes, edges


def torch_graph(out: torch.Tensor) -> tuple[set[int], int, list[str]]:
    """Torch's graph walked directly: unique node ids, the number of non-None next_functions entries,
    and the class names."""
    seen, stack, edges, names = set(), [out.grad_fn], 0, []
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        names.append(type(fn).__name__)
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                edges += 1
                stack.append(nxt)
    return seen, edges, names


def t(values, grad=True):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def _square_twice():
    x = t(1.0)
    y = x * 2
    return y * y


def _cubic():
    a, b = t([2.0, 3.0]), t([6.0, 4.0])
    return 3 * a**3 - b**2


def _mlp():
    w, x = t([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]), t([1.0, 2.0, 3.0])
    h = (w @ x).tanh()
    return (h * h + h.sum()).sum()


def _shared_deep():
    x = t([1.0, 2.0])
    y = x.sin()
    z = y * y.exp()
    return (z + y).sum()


CASES = [
    (["y = x*2; y*y", "-v", "x=1"], _square_twice),
    (["3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4"], _cubic),
    (["h = (w @ x).tanh(); (h*h + h.sum()).sum()", "-v", "w=[[0.5,-1,2],[1.5,0.25,-0.5]]", "-v", "x=1,2,3"], _mlp),
    (["y = sin(x); z = y * exp(y); (z + y).sum()", "-v", "x=1,2"], _shared_deep),
]


@pytest.mark.parametrize("args, build", CASES, ids=[c[0][0] for c in CASES])
def test_dot_has_torchs_nodes_and_edges(gradcheck, args, build):
    dot = gradcheck("graph", *args, "--dot", "-").stdout
    nodes, edges = parse_dot(dot)
    ids, edge_count, names = torch_graph(build())
    assert len(nodes) == len(ids)
    assert len([e for e in edges if "dashed" not in e[2]]) == edge_count
    assert sorted(label[0].split()[0] for label, _ in nodes.values()) == sorted(names)


def test_a_node_reached_twice_is_one_node_with_two_edges(gradcheck):
    nodes, edges = parse_dot(gradcheck("graph", "y = x*2; y*y", "-v", "x=1", "--dot", "-").stdout)
    by_label = {label[0]: n for n, (label, _) in nodes.items()}
    assert set(by_label) == {"MulBackward0", "MulBackward0  y", "AccumulateGrad (x)"}
    assert edges.count((by_label["MulBackward0"], by_label["MulBackward0  y"], "")) == 2
    assert "shown above" not in " ".join(" ".join(label) for label, _ in nodes.values())


def test_nodes_carry_names_shapes_and_dtypes(gradcheck):
    dot = gradcheck("graph", "y = a @ b; z = y.sum(dim=0); z * 2", "-v", "a=randn(2,3)", "-v", "b=randn(3,4)",
                    "--dtype", "float32", "--dot", "-").stdout
    labels = {label[0]: label[1:] for label, _ in parse_dot(dot)[0].values()}
    assert labels["MmBackward0  y"][0] == "[2, 4] float32"
    assert labels["SumBackward1  z"][0] == "[4] float32"
    assert labels["MulBackward0"][0] == "[4] float32"
    assert labels["AccumulateGrad (a)"][0] == "[2, 3] float32"


def test_detached_inputs_and_constants_are_drawn_dashed(gradcheck):
    dot = gradcheck("graph", "z = detach(x) * x + c; z.sum()", "-v", "x=1,2", "-v", "c=3,4", "--wrt", "x",
                    "--dot", "-").stdout
    nodes, edges = parse_dot(dot)
    dashed = {n: label for n, (label, attrs) in nodes.items() if "dashed" in attrs}
    assert sorted(label[0] for label in dashed.values()) == ["constant c  (no gradient)",
                                                            "detach(x)  (detached: no gradient)"]
    into = [(a, b) for a, b, attrs in edges if b in dashed]
    assert len(into) == 2 and all("dashed" in attrs for _, b, attrs in edges if b in dashed)
    mul = next(n for n, (label, _) in nodes.items() if label[0] == "MulBackward0")
    assert (mul, next(n for n, lab in dashed.items() if lab[0].startswith("detach"))) in into


@pytest.mark.parametrize("expression, label", [
    ("z = detach(x) * x; z.sum()", "detach(x)  (detached: no gradient)"),
    ("z = x.detach() * x; z.sum()", "x.detach()  (detached: no gradient)"),
    ("z = x.data * x; z.sum()", "x.data  (detached: no gradient)"),
    ("with no_grad(): w = x * 2\nz = w * x; z.sum()", "w = x * 2  (under no_grad: no gradient)"),
    ("with torch.no_grad():\n    w = x * 2\nz = w * x; z.sum()", "w = x * 2  (under no_grad: no gradient)"),
    ("z = (x > 1.5) * x; z.sum()", "x > 1.5  (a mask: no gradient)"),
])
def test_every_way_of_holding_a_value_is_drawn_as_a_detached_input(gradcheck, expression, label):
    """torch records no node for a value without history: the graph draws it, linked dashed from the op
    that used it (MulBackward0), and that op's only autograd edge goes to x."""
    nodes, edges = parse_dot(gradcheck("graph", expression, "-v", "x=1,2", "--dot", "-").stdout)
    dashed = [n for n, (_, attrs) in nodes.items() if "dashed" in attrs]
    assert [nodes[n][0][0] for n in dashed] == [label]
    mul = next(n for n, (lines, _) in nodes.items() if lines[0].startswith("MulBackward0"))
    assert [(b, "dashed" in attrs) for a, b, attrs in edges if a == mul] == [
        (next(n for n, (lines, _) in nodes.items() if lines[0] == "AccumulateGrad (x)"), False), (dashed[0], True)]
    data = gradcheck.json("graph", expression, "-v", "x=1,2")["graph"]
    assert [n["kind"] for n in data["nodes"]].count("detached") == 1 and len(data["stops"]) == 1


def test_values_with_history_are_not_drawn_as_detached(gradcheck):
    """`y = x` under no_grad is x itself, and an in-place change through .data or under no_grad keeps
    the name's own history: nothing is drawn dashed."""
    for expression in ("with no_grad(): w = x\nz = w * x; z.sum()", "y = x * 3; y.data.mul_(2); (y * x).sum()",
                       "y = x * 3\nwith no_grad(): y += 1\n(y * x).sum()"):
        dot = gradcheck("graph", expression, "-v", "x=1,2", "--dot", "-").stdout
        assert "dashed" not in dot, expression


def test_text_tree_reads_well(gradcheck):
    text = gradcheck("graph", "y = x*2; y*y + detach(x)", "-v", "x=1,2").stdout
    assert "MulBackward0  y  [2] float64" in text
    assert "AccumulateGrad (x)  [2] float64" in text
    assert "(again: its gradients add up)" in text
    assert "detach(x)  (detached: no gradient)" in text
    assert text.count("AccumulateGrad (x)") == 1  # below the repeated node, nothing is drawn twice


def test_dot_file_and_stdout_are_the_same(gradcheck, tmp_path):
    path = tmp_path / "g.dot"
    shown = gradcheck("graph", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--dot", str(path)).stdout
    alone = gradcheck("graph", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--dot", "-").stdout
    assert path.read_text() == alone
    assert alone.startswith("digraph grad_fn {") and "grad_fn graph of" not in alone
    assert "grad_fn graph of 3*a**3 - b**2" in shown


def test_check_json_graph_keeps_specs_shape_with_names_added(gradcheck):
    data = gradcheck.json("check", "y = x*2; (y*y).sum()", "-v", "x=1,2")
    g = data["graph"]
    assert set(g) >= {"name", "next"} and g["name"] == "SumBackward0"
    mul = g["next"][0]
    assert mul["name"] == "MulBackward0" and mul["shape"] == [2] and mul["dtype"] == "float64"
    y = mul["next"][0]
    assert y["produces"] == "y" and y["next"][0] == {"name": "AccumulateGrad", "variable": "x", "shape": [2],
                                                    "dtype": "float64", "next": []}


@needs_dot
def test_svg_is_xml_naming_the_nodes(gradcheck, tmp_path):
    path = tmp_path / "g.svg"
    gradcheck("graph", "y = x*2; y*y", "-v", "x=1", "--svg", str(path))
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    texts = [el.text for el in root.iter() if el.tag.endswith("text") and el.text]
    assert "MulBackward0  y" in [t.replace("\xa0", " ") for t in texts]
    assert "AccumulateGrad (x)" in texts
    titles = [el.text for el in root.iter() if el.tag.endswith("title")]
    assert sum(1 for title in titles if re.fullmatch(r"n\d+", title or "")) == 3  # one per node
    assert sum(1 for title in titles if "->" in (title or "")) == 3  # two from n0 to n1, one to x


@needs_dot
def test_png_opens_and_is_not_trivial(gradcheck, tmp_path):
    path = tmp_path / "g.png"
    gradcheck("graph", "3*a**3 - b**2", "-v", "a=2,3", "-v", "b=6,4", "--png", str(path), "--explain")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    image = pytest.importorskip("PIL.Image")
    with image.open(path) as picture:
        width, height = picture.size
        assert width > 200 and height > 200
        assert len(picture.convert("L").getcolors(maxcolors=1 << 16) or [None] * 99) > 2  # not blank


def test_without_graphviz_exit_2_with_the_install_hint(gradcheck, tmp_path, monkeypatch):
    monkeypatch.setattr(graph_module.shutil, "which", lambda name: None)
    for flag in ("--svg", "--png"):
        path = tmp_path / f"g.{flag[2:]}"
        stderr = gradcheck.error("graph", "x * 2", "-v", "x=1", flag, str(path))
        assert stderr.startswith(f"error: {flag} needs Graphviz's `dot` program")
        assert "apt-get install graphviz" in stderr and "brew install graphviz" in stderr
        assert not path.exists()


def test_graph_of_a_large_program_is_cut_and_marked(monkeypatch):
    monkeypatch.setattr(graph_module, "MAX_DAG_NODES", 5)
    x = t([1.0])
    out = x
    for _ in range(10):
        out = out.sin()
    dag = graph_module.read_dag(out.grad_fn, {}, {})
    assert len(dag.nodes) == 5 and dag.nodes[-1].truncated


# ---------------------------------------------------------------- --explain


def test_explain_gradients_are_torchs_own(gradcheck):
    data = gradcheck.json("check", "y = x*2; z = y*y*3; z.mean()", "-v", "x=1,2", "--explain")
    nodes = data["explain"]["nodes"]
    x = t([1.0, 2.0])
    y = x * 2
    y.retain_grad()
    z = y * y * 3
    z.retain_grad()
    z.mean().backward()
    by = {node.get("produces") or node.get("variable"): node for node in nodes}
    np.testing.assert_allclose(by["y"]["grad"], y.grad.numpy(), rtol=1e-15)
    np.testing.assert_allclose(by["z"]["grad"], z.grad.numpy(), rtol=1e-15)
    np.testing.assert_allclose(by["x"]["grad"], x.grad.numpy(), rtol=1e-15)
    assert by["y"]["rule"] == RULES["MulBackward0"]
    assert nodes[0]["name"] == "MeanBackward0" and nodes[0]["grad"] == 1.0


def test_explain_follows_grad_output(gradcheck):
    data = gradcheck.json("check", "y = x**3; y * 2", "-v", "x=1,2", "--grad-output", "1,10", "--explain")
    by = {node.get("produces") or node.get("variable"): node for node in data["explain"]["nodes"]}
    assert by["y"]["grad"] == [2.0, 20.0]          # d(2y)/dy · g
    assert by["x"]["grad"] == [6.0, 240.0]         # · 3x²
    assert "grad-output" in data["explain"]["seed"]


def test_explain_in_the_terminal_shows_rules_and_gradients(gradcheck):
    text = gradcheck("graph", "y = x**3; (y*2).sum()", "-v", "x=1,2", "--explain").stdout
    assert "PowBackward0  y  [2] float64" in text
    assert "d/dx x**n = n*x**(n-1)" in text
    assert "g = [2, 2]" in text and "g = [6, 24]" in text
    check_text = gradcheck("check", "y = x**3; (y*2).sum()", "-v", "x=1,2", "--explain").stdout
    assert "d/dx x**n = n*x**(n-1)" in check_text and "g = [6, 24]" in check_text
    assert "d/dx x**n" not in gradcheck("check", "y = x**3; (y*2).sum()", "-v", "x=1,2").stdout


# Each op of the table, used so that torch records every node class it can produce.
OP_EXPRESSIONS = [
    "a + b", "a - b", "a * b", "a / b", "a ** b", "a ** 2", "2 ** a", "a + 2", "a - 2", "2 - a", "a * 2",
    "a / 2", "2 / a", "-a", "maximum(a, b)", "minimum(a, b)",
    "sin(a)", "cos(a)", "tan(a)", "asin(a * 0.5)", "acos(a * 0.5)", "atan(a)", "sinh(a)", "cosh(a)", "tanh(a)",
    "exp(a)", "log(a)", "log1p(a)", "expm1(a)", "sqrt(a)", "abs(a)", "sigmoid(a)", "relu(a)", "softplus(a)",
    "clamp(a, 0.6, 0.9)", "clamp(a, min=0.6)", "clamp(a, max=0.9)",
    "sum(a)", "sum(a, dim=0)", "mean(a)", "mean(a, dim=0)", "prod(a)", "prod(a, dim=0)", "max(a)",
    "max(a, dim=0)", "min(a)", "min(a, dim=0)", "logsumexp(a, dim=0)", "norm(a)", "norm(a, dim=0)",
    "norm(a, p=1.0)", "softmax(a)", "log_softmax(a)", "matmul(a, m)", "a[0] @ m", "a @ m[:, 0]",
    "reshape(a, -1)", "view(a, 6)", "flatten(a)", "transpose(a)", "a.T", "a[0]", "a[:, 1]", "detach(a) * a",
    # the language grown for the notebooks
    "clone(a)", "a.clone()", "unsqueeze(a, 0)", "squeeze(unsqueeze(a, 0))", "squeeze(unsqueeze(a, 1), 1)",
    "squeeze(unsqueeze(a, 1), (1,))", "flatten(a, 0, 1)", "cat((a, b))", "cat([a, b], dim=1)", "stack((a, b))",
    "stack([a, b], dim=2)", "where(a > b, a, b)", "where(a > 1, a, 0)", "(a < b) * a", "(a <= b) * a",
    "(a >= b) * a", "(a == b) * a", "(a != b) * a", "linear(a, w)", "linear(a, w, v)", "linear(a[0], w)",
    "linear(a[0], w, v)", "mse_loss(a, b)", "cross_entropy(a, t)", "cross_entropy(a[0], t[0])", "a[0][t]",
    # in place: on a non-leaf, as torch requires
    *(f"y = a * 0.5; y.{method}(); y" for method in (
        "abs_", "acos_", "asin_", "atan_", "cos_", "cosh_", "sin_", "sinh_", "tan_", "tanh_", "exp_", "expm1_",
        "log_", "log1p_", "neg_", "relu_", "sigmoid_", "sqrt_")),
    *(f"y = a.clone(); y.{method}({arg}); y" for method in ("add_", "sub_", "mul_", "div_", "pow_")
      for arg in ("b", "2")),
    "y = a * 1; y.clamp_(0.6, 0.9); y", "y = a * 1; y.clamp_(min=0.6); y", "y = a * 1; y.clamp_(max=0.9); y",
    "y = a * 1; y.zero_(); y + a", "y = a * 1; y.fill_(2); y + a", "y = a * 1; y[0] = b[0]; y",
    "y = a * 1; y[0, 1] = 5; y", "y = a * 1; y[a > 1] = 0; y", "y = a * 1; y += b; y", "y = a * 1; y *= 2; y",
    "y = a * 1; y.data.mul_(2); y", "y = a * 1\nwith no_grad(): y += 1\ny * a",
]


def test_every_node_the_op_table_produces_has_its_rule():
    table = OPS
    used, classes = set(), set()
    for text in OP_EXPRESSIONS:
        program = parse(text, table)
        used |= program.ops
        env = {"a": torch.rand(2, 3, dtype=torch.float64) + 0.5, "b": torch.rand(2, 3, dtype=torch.float64) + 0.5,
               "m": torch.rand(3, 2, dtype=torch.float64), "w": torch.rand(4, 3, dtype=torch.float64),
               "v": torch.rand(4, dtype=torch.float64), "t": torch.tensor([0, 2])}  # t: class labels (long)
        for value in env.values():
            value.requires_grad_(value.is_floating_point())
        from gradcheck_cli.evaluate import TorchBackend, Walker
        out = Walker(program, table, TorchBackend(torch.float64)).run(dict(env))
        classes |= set(torch_graph(out)[2])
    unused = sorted(set(functions(table)) - used)
    assert not unused, f"add an expression using {unused} to OP_EXPRESSIONS (and rules for its nodes to rules.py)"
    grown = {"CloneBackward0", "UnsqueezeBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2",
             "SqueezeBackward4", "CatBackward0", "StackBackward0", "WhereBackward0", "AddmmBackward0", "MmBackward0",
             "MseLossBackward0", "NllLossBackward0", "LogSoftmaxBackward0", "IndexBackward0", "CopySlices",
             "IndexPutBackward0", "ZeroBackward0", "FillBackward2", "ClampBackward1"}
    assert grown <= classes, f"the expressions no longer produce {sorted(grown - classes)}"
    missing = sorted(name for name in classes if rule(name) == GENERIC)
    assert not missing, f"add the local derivative rule of {missing} to gradcheck_cli/rules.py"
    assert rule("MyCustomBackward") == GENERIC


def test_graph_json_is_the_dag(gradcheck):
    data = gradcheck.json("graph", "y = x*2; y*y", "-v", "x=1")
    nodes, edges = data["graph"]["nodes"], data["graph"]["edges"]
    ids, edge_count, names = torch_graph(_square_twice())
    assert len(nodes) == len(ids) and len(edges) == edge_count
    assert sorted(n["name"] for n in nodes) == sorted(names)
    y = next(k for k, n in enumerate(nodes) if n.get("produces") == "y")
    assert edges.count([0, y]) == 2
    assert all("rule" not in n for n in nodes)  # rules and g only with --explain


def test_explain_reproduces_the_notebooks_four_and_a_half(gradcheck):
    """seed 002's 4.5: y = x + 2; z = y*y*3; out = z.mean() at x = ones(2,2) gives d out/dx = 4.5."""
    data = gradcheck.json("graph", "y = x + 2; z = y*y*3; z.mean()", "-v", "x=ones(2,2)", "--explain")
    by = {node.get("produces") or node.get("variable"): node for node in data["graph"]["nodes"]}
    assert by["z"]["grad"] == [[0.25, 0.25], [0.25, 0.25]]
    assert by["y"]["grad"] == [[4.5, 4.5], [4.5, 4.5]]
    assert by["x"]["grad"] == [[4.5, 4.5], [4.5, 4.5]]
    assert by["y"]["rule"] == RULES["AddBackward0"]
