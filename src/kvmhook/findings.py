"""The values that flow from the rules to the reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Change:
    """One value a fix rewrites: the index-th <devices><emulator> text, <domain type>, or
    ("daemon") the definition a libvirt daemon holds, brought in line with the file."""

    what: Literal["emulator", "type", "daemon"]
    index: int
    old: str
    new: str


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    domain: str | None
    kind: str
    severity: Severity
    current: str | None
    proposed: str | None
    message: str
    change: Change | None = None

    @property
    def fixable(self) -> bool:
        return self.change is not None

    def as_json(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "domain": self.domain,
            "kind": self.kind,
            "severity": self.severity,
            "fixable": self.fixable,
            "current": self.current,
            "proposed": self.proposed,
            "message": self.message,
        }


def has_errors(findings: list[Finding] | tuple[Finding, ...]) -> bool:
    return any(f.severity == "error" for f in findings)
