"""The values that flow from the rules to the reports."""

from __future__ import annotations

from collections import namedtuple


class Change(namedtuple("Change", "what index old new")):
    """One value a fix rewrites.

    what is "emulator" (the index-th <devices><emulator> text), "type" (<domain type>),
    "machine" (<os><type machine>), or "daemon" (the definition a libvirt daemon holds,
    brought in line with the file).
    """

    __slots__ = ()


class Finding(
    namedtuple(
        "Finding",
        "file line domain kind severity current proposed message change",
        defaults=(None,),
    )
):
    """One thing found in one config: severity is "error" or "warning"; change is what a
    fix would do about it, or None when it cannot."""

    __slots__ = ()

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


def has_errors(findings) -> bool:
    return any(f.severity == "error" for f in findings)
