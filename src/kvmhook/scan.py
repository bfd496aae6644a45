"""From config folders to findings and the planned new bytes of each file."""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import domains, edit, rules
from .domains import Config
from .findings import Finding


@dataclass(frozen=True)
class Outcome:
    config: Config
    findings: tuple[Finding, ...]
    new_data: bytes | None  # what a fix writes; None when nothing to write

    @property
    def changes(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.fixable) if self.new_data else ()

    @property
    def daemon_behind(self) -> bool:
        """The file is right but the daemon holds a stale copy of it."""
        return any(f.fixable and f.change.what == "daemon" for f in self.findings)


def assess(config: Config, facts: rules.Facts) -> Outcome:
    findings = rules.evaluate(config, facts)
    changes = [f.change for f in findings if f.change is not None and f.change.what != "daemon"]
    new_data = None
    if changes and config.entry == "file" and config.data is not None:
        try:
            new_data = edit.apply(config.data, changes)
        except edit.EditError as err:
            findings = [
                replace(f, change=None, message=f"{f.message}; not fixed automatically: {err}")
                if f.fixable
                else f
                for f in findings
            ]
    after = new_data if new_data is not None else config.data
    # An emulator kvmhook cannot fix is reported once, as itself, not again as a grep match.
    told = {f.line for f in findings if f.kind == "wrapper-emulator" and not f.fixable}
    findings += [f for f in rules.leftover_mentions(config, after) if f.line not in told]
    return Outcome(config, tuple(findings), new_data)


def scan(root: str, session: bool, facts: rules.Facts) -> list[Outcome]:
    folders = domains.config_folders(root, session)
    return [assess(config, facts) for config in domains.discover(folders)]
