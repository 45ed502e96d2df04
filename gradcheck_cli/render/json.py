"""CheckResult → the SPEC's JSON dict (strict JSON: non-finite numbers as "nan", "inf", "-inf")."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ..compare import CheckResult, GradientResult, plain
from ..graph import to_dict
from ..verdict import SAFETY, Verdict

if TYPE_CHECKING:  # importing batch at run time would be circular
    from ..batch import BatchResult


def _number(x: float | None) -> Any:
    return None if x is None else plain(x)


def gradient_dict(r: GradientResult) -> dict[str, Any]:
    failing = np.flatnonzero(~r.passed.reshape(-1))
    entry = {
        "shape": list(r.shape), "value": plain(r.value),
        "analytic": plain(r.analytic), "numeric": plain(r.numeric),
        "numeric_error": plain(r.numeric_error),
        "max_abs_error": _number(r.max_abs_error), "max_rel_error": _number(r.max_rel_error),
        "ok": r.ok,
    }
    if r.symbolic is not None:
        entry["symbolic"] = plain(r.symbolic)
    if r.projection is not None:  # analytic and numeric hold one projection a direction
        entry["projection"] = {"directions": r.projection.directions, "elements": r.projection.elements,
                               "caught_above": plain(r.projection.caught_above),
                               "slip_chance": plain(r.projection.slip_chance),
                               "statement": r.projection.statement()}
    if r.structure is not None:  # a structured Jacobian: the entries its pattern allows were compared
        entry["structure"] = {"kind": r.structure.kind, "entries": r.structure.entries,
                              "elements": r.structure.elements, "vjps": r.structure.vjps,
                              "verified": r.structure.verified, "caught_above": plain(r.structure.caught_above),
                              "slip_chance": plain(r.structure.slip_chance), "statement": r.structure.statement()}
    unsure = int((~r.passed & ~r.wrong).sum())
    if unsure:
        entry["unreliable"] = unsure
    if r.diagnosis:
        entry["diagnosis"] = r.diagnosis
    if failing.size:
        reasons = r.reasons.reshape(-1)
        verdict = r.verdict.reshape(-1)
        bound = np.broadcast_to(SAFETY * np.asarray(r.numeric_error), r.analytic.shape).reshape(-1)
        entry["failures"] = [
            {"index": _index(k, r.passed.shape), "analytic": plain(r.analytic.reshape(-1)[k]), "numeric": plain(r.numeric.reshape(-1)[k]),
             "abs_error": plain(r.abs_error.reshape(-1)[k]), "tolerance": plain(r.tolerance.reshape(-1)[k]),
             "bound": plain(bound[k]), "verdict": Verdict(int(verdict[k])).name.lower(),
             "reason": reasons[k] or "outside tolerance"}
            for k in failing
        ]
    if r.decision.kink is not None and r.decision.kink.any():  # kinks are reported even where they pass
        reasons = r.reasons.reshape(-1)
        entry["notes"] = [{"index": _index(k, r.passed.shape), "note": reasons[k]}
                          for k in np.flatnonzero(r.decision.kink.reshape(-1))]
    return entry


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(flat, shape)] if shape else []


def check_dict(result: CheckResult) -> dict[str, Any]:
    """The SPEC's JSON object for one check."""
    out: dict[str, Any] = {
        "ok": result.ok,
        "expression": result.expression,
        "dtype": result.dtype,
        "method": result.method,
        "atol": result.atol, "rtol": result.rtol, "eps": result.eps, "seed": result.seed,
        "mode": result.mode,
        "output": {"shape": list(result.output_shape), "value": plain(result.output_value)},
    }
    if result.grad_output is not None:
        out["grad_output"] = plain(result.grad_output)
    out["inputs"] = {name: gradient_dict(r) for name, r in result.inputs.items()}
    if result.intermediates:
        out["intermediates"] = {name: gradient_dict(r) for name, r in result.intermediates.items()}
    if result.hessians:
        out["hessians"] = {name: gradient_dict(r) for name, r in result.hessians.items()}
    if result.constants:
        out["constants"] = {name: {"shape": list(np.shape(v)),  # long() labels stay integers
                                   "value": np.asarray(v).tolist() if np.issubdtype(np.asarray(v).dtype, np.integer)
                                   else plain(v)}
                            for name, v in result.constants.items()}
    if result.custom_ops:
        out["custom_ops"] = [{"op": r.op, "line": r.line, "column": r.col + 1, "ok": r.ok,
                              "checks": [{"check": f.check, "ok": f.ok, "verdict": f.verdict, "message": f.message}
                                         for f in r.findings]}
                             for r in result.custom_ops]
        out["blame"] = result.blame
    out["graph"] = to_dict(result.graph)
    out["replay"] = result.replay
    out["versions"] = result.versions
    return out


def dag_dict(dag: Any) -> dict[str, Any] | None:
    """The grad_fn DAG (`check --explain --json`): nodes once each, autograd's edges as [from, to]
    index pairs (gradient flow), `stops` to inputs that get no gradient; rule and g per node."""
    if dag is None:
        return None
    nodes = []
    for node in dag.nodes:
        entry: dict[str, Any] = {"name": node.name, "kind": node.kind}
        for key in ("variable", "produces", "dtype", "text", "rule"):
            if getattr(node, key):
                entry[key] = getattr(node, key)
        if node.shape is not None:
            entry["shape"] = list(node.shape)
        if node.grad is not None:
            entry["grad"] = plain(node.grad)
        nodes.append(entry)
    return {"nodes": nodes, "edges": [list(e) for e in dag.edges], "stops": [list(e) for e in dag.stops],
            "seed": dag.seed}


def dumps(data: Any) -> str:
    """Strict JSON text (allow_nan=False: a stray non-finite float is a bug, not output)."""
    return json.dumps(data, indent=2, allow_nan=False)


def batch_dict(batch: "BatchResult") -> dict[str, Any]:
    """The SPEC's JSON object for a batch: counts, then every case in file order."""
    from ..batch import Status
    from .step import result_dict  # a case may be a step run or an accumulation
    return {
        "ok": batch.ok,
        "passed": batch.count(Status.PASS),
        "failed": batch.count(Status.FAIL, Status.XPASS),
        "errors": batch.count(Status.ERROR),
        "xfailed": batch.count(Status.XFAIL),
        "cases": [{"file": c.file, "line": c.line, "name": c.name, "status": c.status, "message": c.message,
                   "seconds": round(c.seconds, 6), "result": _case_result(c, result_dict)}
                  for c in batch.cases],
    }


def _case_result(case: Any, result_dict: Any) -> Any:
    """A case's result JSON; for a check too large for a batch to keep, its summary (no arrays)."""
    if case.result is not None:
        return result_dict(case.result)
    s = case.summary
    if s is None:
        return None
    return {"ok": s.ok, "expression": s.expression, "dtype": s.dtype, "method": s.method, "atol": s.atol,
            "rtol": s.rtol, "mode": s.mode,
            "inputs": {g.name: {"shape": list(g.shape), "max_abs_error": _number(g.max_abs_error),
                                "max_rel_error": _number(g.max_rel_error), "ok": g.ok, "failures": g.failures}
                       for g in s.gradients},
            "arrays": f"not kept: {s.elements:,} gradient elements is more than a batch keeps per case; "
                      "run the replay line for them",
            "replay": s.replay}


def module_dict(result: Any) -> dict[str, Any]:
    """The SPEC's JSON object for `gradcheck module`: the check object with "module", "parameters"
    (dotted name → the fields of an input, "reason" where not ok), "inputs" (filled with --wrt-inputs),
    "buffers" (name → shape), "frozen", "unused" (all always present)."""
    base = check_dict(result)
    out: dict[str, Any] = {"ok": base.pop("ok"), "module": result.module, "loss": result.loss,
                           "train": result.train}
    base.pop("inputs")
    graph, replay, found = base.pop("graph"), base.pop("replay"), base.pop("versions")
    out.update(base)

    def entry(name: str, r: GradientResult) -> dict[str, Any]:
        d = gradient_dict(r)
        if name in result.reasons:
            d["reason"] = result.reasons[name]
        if name in result.blamed:
            d["ops"] = list(result.blamed[name])
        return d

    out["parameters"] = {name: entry(name, r) for name, r in result.parameters.items()}
    out["inputs"] = {name: entry(name, r) for name, r in result.inputs.items()}   # {} without --wrt-inputs
    out["buffers"] = {name: list(shape) for name, shape in result.buffers.items()}
    out["frozen"] = list(result.frozen)
    out["unused"] = list(result.unused)
    out["skipped"] = list(result.skipped)
    if result.blame:
        out["blame"] = result.blame
    out["graph"], out["replay"], out["versions"] = graph, replay, found
    return out
