"""BatchResult → JUnit XML, as CI systems read it: one testcase a case, failures and errors apart.

Every string is passed through xml_text, so the file is well-formed whatever a case name holds."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from ..batch import BatchResult, Status
from .safe import xml_text


def junit_xml(batch: BatchResult) -> str:
    cases = batch.cases
    suite = ET.Element("testsuite", {
        "name": "gradcheck", "tests": str(len(cases)),
        "failures": str(batch.count(Status.FAIL, Status.XPASS)), "errors": str(batch.count(Status.ERROR)),
        "skipped": str(batch.count(Status.XFAIL)), "time": f"{sum(c.seconds for c in cases):.3f}",
    })
    for case in cases:
        element = ET.SubElement(suite, "testcase", {
            "classname": xml_text(os.path.splitext(case.file)[0].replace(os.sep, ".")), "name": xml_text(case.name),
            "file": xml_text(case.file), "line": str(case.line), "time": f"{case.seconds:.3f}",
        })
        kind = {Status.FAIL: "failure", Status.XPASS: "failure", Status.ERROR: "error",
                Status.XFAIL: "skipped"}.get(case.status)
        if kind:
            first = case.message.splitlines()[0] if case.message else case.status
            child = ET.SubElement(element, kind, {"message": xml_text(first), "type": case.status})
            child.text = xml_text(case.message)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
