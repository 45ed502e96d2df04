"""pytest plugin (entry point pytest11): collect gradcheck_*.toml files, one test item a case."""
from __future__ import annotations

from typing import Any

import pytest

from .batch import Case, Status, load_cases, run_case


def pytest_collect_file(parent: pytest.Collector, file_path: Any) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and file_path.name.startswith("gradcheck_"):
        return GradcheckFile.from_parent(parent, path=file_path)
    return None


class GradcheckFile(pytest.File):
    def collect(self):
        seen: dict[str, int] = {}
        for case in load_cases(str(self.path), trust_plugins=True):  # pytest runs the repository's code anyway
            count = seen[case.name] = seen.get(case.name, 0) + 1
            name = case.name if count == 1 else f"{case.name} [{count}]"
            yield GradcheckItem.from_parent(self, name=name, case=case)


class GradcheckFailure(Exception):
    """A case that failed, errored or passed unexpectedly; its text is the report."""


class GradcheckItem(pytest.Item):
    def __init__(self, *, case: Case, **kwargs: Any):
        super().__init__(**kwargs)
        self.case = case
        if case.xfail is not None:
            self.add_marker(pytest.mark.xfail(reason=case.xfail, strict=True, raises=GradcheckFailure))

    def runtest(self) -> None:
        outcome = run_case(self.case, timeout=None)
        if outcome.status in (Status.PASS, Status.XPASS):
            return  # an xpass is reported by pytest's strict xfail
        text = outcome.message
        if outcome.result is not None:
            from .render.step import result_view
            from .render.table import to_text
            text += "\n" + to_text(result_view(outcome.result))
        raise GradcheckFailure(f"{outcome.status}: {text}")

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, GradcheckFailure):
            return f"{self.case.file}:{self.case.line} {self.case.name}\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, max(self.case.line - 1, 0), f"gradcheck: {self.case.name}"
