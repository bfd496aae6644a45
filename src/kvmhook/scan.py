"""From config folders to findings and the planned new bytes of each file."""

from __future__ import annotations

from collections import namedtuple

from . import domains, rules
from .domains import Config


class Outcome(namedtuple("Outcome", "config findings new_data")):
    """One config, what was found in it, and what a fix writes (None: nothing).

    The config keeps its bytes only when there is something to write.
    """

    __slots__ = ()

    @property
    def changes(self) -> tuple:
        return tuple(f for f in self.findings if f.fixable) if self.new_data else ()

    @property
    def daemon_behind(self) -> bool:
        """The file is right but the daemon holds a stale copy of it."""
        return any(f.fixable and f.change.what == "daemon" for f in self.findings)


def assess(config: Config, facts: rules.Facts, verify: bool = True) -> Outcome:
    """Findings and the new bytes; verify checks the edit with a second parser (fix does)."""
    findings = rules.evaluate(config, facts)
    changes = [f.change for f in findings if f.change is not None and f.change.what != "daemon"]
    new_data = None
    if changes:
        from . import edit

        try:
            new_data = (edit.apply if verify else edit.splice)(config.data, changes, config.domain)
        except edit.EditError as err:
            findings = [
                f._replace(change=None, message=f"{f.message}; not fixed automatically: {err}")
                if f.fixable
                else f
                for f in findings
            ]
    after = new_data if new_data is not None else config.data
    # An emulator kvmhook cannot fix is reported once, as itself, not again as a grep match.
    told = {f.line for f in findings if f.kind == "wrapper-emulator" and not f.fixable}
    findings += [f for f in rules.leftover_mentions(config, after) if f.line not in told]
    outcome = Outcome(config, tuple(findings), new_data)
    if new_data is None and not outcome.daemon_behind:
        outcome = outcome._replace(config=config._replace(data=None))  # flat memory
    return outcome


def scan(root: str, session: bool, facts: rules.Facts, verify: bool = True) -> list[Outcome]:
    folders = domains.config_folders(root, session)
    return [assess(config, facts, verify) for config in domains.discover(folders)]
