"""`gradcheck steps`: each method's error against h, against an independent numpy computation of the
same differences and sympy's exact derivative; the default element, the chosen step, the pictures."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from gradcheck_cli.cli import main
from helpers import strict_json

PLUGINS = os.path.join(os.path.dirname(__file__), "plugins")


def run(*args: str, columns: int = 200, exit_code: int = 0):
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": str(columns), "TERM": "dumb"})
    result = runner.invoke(main, ["steps", *args], catch_exceptions=exit_code != 0)
    assert result.exit_code == exit_code, result.stdout + result.stderr
    return result


def curves(*args: str) -> dict:
    return strict_json(run(*args, "--json").stdout)


def test_json_shape_and_grid():
    data = curves("sin(x).sum()", "-v", "x=1,2", "--element", "x[1]")
    assert set(data) >= {"element", "chosen", "exact", "curves"}
    assert data["element"] == "x[1]" and set(data["chosen"]) >= {"method", "h"}
    assert list(data["curves"]) == ["central", "forward", "richardson", "complex"]
    for points in data["curves"].values():
        hs = np.array([p["h"] for p in points])
        assert hs.min() == pytest.approx(1e-16) and hs.max() == pytest.approx(1e-1)
        assert np.all(np.diff(hs) > 0)
        for k in range(-16, -1):  # at least 4 points in every decade
            assert ((hs >= 10.0**k * (1 - 1e-12)) & (hs < 10.0**(k + 1) * (1 - 1e-12))).sum() >= 4


def test_errors_are_the_differences_against_sympys_exact_value():
    data = curves("sin(x).sum()", "-v", "x=1,2", "--element", "x[1]")
    assert data["exact"] == pytest.approx(np.cos(2.0), abs=1e-16)
    assert data["against"] == "exact (sympy)"
    x = 2.0
    # each compared where truncation, not rounding noise, makes the error
    for method, formula, smallest in (("central", lambda h: (np.sin(x + h) - np.sin(x - h)) / (2 * h), 1e-3),
                                      ("forward", lambda h: (np.sin(x + h) - np.sin(x)) / h, 1e-5),
                                      ("complex", lambda h: np.imag(np.sin(x + 1j * h)) / h, 1e-5)):
        compared = 0
        for point in data["curves"][method]:
            h = (x + point["h"]) - x  # the step actually taken
            if not smallest < point["h"] < 1e-1:
                continue
            compared += 1
            expected = abs(formula(h) - np.cos(x))
            assert point["error"] == pytest.approx(expected, rel=1e-3, abs=1e-15), (method, point)
        assert compared >= 7


def test_the_v_of_truncation_against_rounding():
    data = curves("exp(x)", "-v", "x=1.5", "--method", "central")
    errors = {p["h"]: p["error"] for p in data["curves"]["central"]}
    hs = np.array(sorted(errors))
    e = np.array([float(errors[h]) for h in hs])  # "nan" where the step vanishes (x + h == x)
    def band(lo: float, hi: float) -> float:
        return float(np.nanmax(e[(hs >= lo) & (hs <= hi)]))

    middle = band(1e-6, 1e-4)  # around eps^(1/3): the bottom of the V
    assert band(1e-2, 1e-1) > 100 * middle   # truncation (h²) at large steps
    assert band(1e-14, 1e-12) > 100 * middle  # rounding (eps/h) at small ones
    assert data["chosen"]["method"] == "central"
    assert data["chosen"]["h"] == pytest.approx(np.cbrt(np.finfo(float).eps) * 1.5)
    forward = np.array([float(p["error"]) for p in data["curves"]["forward"]])
    assert forward[(hs >= 1e-6) & (hs <= 1e-4)].max() > 10 * middle  # first order: worse there


def test_default_element_is_the_worst_and_a_plugin_op_has_no_exact_value():
    data = curves("onewrong(x).sum()", "-v", "x=randn(4,3)", "--plugin", os.path.join(PLUGINS, "one_wrong.py"))
    assert data["element"] == "x[2, 1]"  # flat index 7: where its backward is wrong
    assert data["exact"] is None
    assert data["against"] != "exact (sympy)" and "complex" not in data["curves"]
    assert data["chosen"]["method"] == "richardson"


def test_eps_marks_the_given_step():
    assert curves("sin(x)", "-v", "x=1", "--eps", "1e-5")["chosen"]["h"] == 1e-5


@pytest.mark.parametrize("args, message", [
    (["sin(x).sum()", "-v", "x=1,2", "--element", "x[2]"], "x has shape [2]"),
    (["sin(x).sum()", "-v", "x=1,2", "--element", "y[0]"], "--element names 'y'"),
    (["sin(x).sum()", "-v", "x=1,2", "--element", "x[0"], "--element expects NAME[INDEX]"),
    (["sin(x)", "-v", "x=1,2"], "give a scalar output"),
])
def test_bad_input_is_exit_2(args, message):
    result = run(*args, exit_code=2)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_terminal_plot_fits_80_columns():
    text = run("sin(x).sum()", "-v", "x=1,2", "--method", "central", columns=80).stdout
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert "c central  f forward  r richardson  i complex   | the chosen step" in text
    plot = [line for line in lines if line[:7].strip().startswith("1e") or line.startswith("       ")]
    assert sum(line.count("|") for line in plot) >= 10  # the chosen step's column
    assert "best step of each method" in text and "gradcheck's step: method central" in text


def test_png_opens_and_is_not_trivial(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "steps.png"
    run("sin(x).sum()", "-v", "x=1,2", "--png", str(path))
    image = pytest.importorskip("PIL.Image")
    with image.open(path) as picture:
        assert picture.format == "PNG" and picture.size[0] > 400 and picture.size[1] > 300
        assert len(picture.convert("L").getcolors(maxcolors=1 << 16) or [None] * 99) > 10


def test_png_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    path = tmp_path / "steps.png"
    result = run("sin(x).sum()", "-v", "x=1,2", "--png", str(path), exit_code=2)
    assert result.stderr.startswith("error: --png needs matplotlib")
    assert "pip install 'gradcheck-cli[plot]'" in result.stderr and not path.exists()


def test_plotext_draws_the_same_curves_when_installed():
    plotext = pytest.importorskip("plotext")
    if not hasattr(plotext, "clear_figure"):
        pytest.skip("plotext 6 (another API): the text plot is used")
    from gradcheck_cli.api import CheckOptions
    from gradcheck_cli.render.steps import _plotext
    from gradcheck_cli.steps import step_curves
    drawn = _plotext(step_curves("sin(x)", {"x": "1"}, CheckOptions(method="central")), 80)
    assert "central" in drawn and "richardson" in drawn and "forward" in drawn


def test_written_files_are_ordinary_files(tmp_path):
    path = tmp_path / "s.png"
    pytest.importorskip("matplotlib")
    run("sin(x)", "-v", "x=1", "--png", str(path))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
