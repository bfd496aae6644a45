"""From config folders to findings and the planned new bytes of each file."""

from __future__ import annotations

import os
from collections import namedtuple

from . import domains, rules
from .domains import Config, Folder
from .findings import Finding


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


class Tree:
    """The config folders of one ROOT, opened safely and held open for one command."""

    def __init__(
        self, root: str, session: bool, system: bool | None = None, warn_missing: bool = False
    ):
        self.root, self.session = root, session
        self.folders, self.problems = domains.config_folders(root, session, system, warn_missing)

    def counts(self) -> list[tuple[str, int]]:
        """(folder, how many *.xml entries it holds) for each folder scanned."""
        return [
            (f.path, sum(1 for e in os.scandir(f.fd) if e.name.endswith(".xml")))
            for f in self.folders
        ]

    def close(self) -> None:
        for folder in self.folders:
            folder.close()

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _not_here(finding: Finding, folder: Folder) -> Finding:
    return finding._replace(change=None, message=f"{finding.message}; not fixed: {folder.why}")


def assess(config: Config, facts: rules.Facts, verify: bool = True) -> Outcome:
    """Findings and the new bytes, the edit verified by a second parser: check says
    fixable exactly when fix would write it. (verify=False only for fix's first look,
    which decides whether to take the lock; it verifies under the lock.)"""
    findings = rules.evaluate(config, facts)
    folder = config.folder
    if folder is not None and not folder.writable:
        findings = [_not_here(f, folder) if f.fixable else f for f in findings]
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


def _safely(config: Config, facts: rules.Facts, verify: bool) -> Outcome:
    try:
        return assess(config, facts, verify)
    except Exception as err:  # one bad file is one finding, never the end of the run
        why = f"kvmhook could not handle it ({type(err).__name__}: {err})"
        config = config._replace(domain=None, problem_kind="unparsable", problem=why)
        return Outcome(config._replace(data=None), tuple(rules.unreadable(config, facts)), None)


def _folder_outcome(problem: domains.FolderProblem) -> Outcome:
    finding = Finding(
        file=problem.path,
        line=None,
        domain=None,
        kind=problem.kind,
        severity=problem.severity,
        current=None,
        proposed=None,
        message=problem.reason
        if problem.kind == "missing-folder"
        else f"config folder not scanned: {problem.reason}",
    )
    return Outcome(Config(problem.path, "folder"), (finding,), None)


# From this many configs on, a read-only scan uses both cores (os.fork: multiprocessing
# alone costs 10 to 18 ms to import).
PARALLEL_FROM = 300


def scan(
    tree: Tree,
    facts: rules.Facts,
    verify: bool = True,
    fast: bool = True,
    parallel: bool = False,
) -> list[Outcome]:
    """The outcome of every config that has something to say or to write. With fast, a
    file whose bytes prove it clean is not parsed further (tests compare both ways).
    parallel (for what only reports: the outcomes keep findings, not bytes) splits a large
    folder between this process and a child, unless a daemon link is open."""
    clean = (lambda data: rules.plainly_clean(data, facts)) if fast else None
    found = domains.entries(tree.folders)
    outcomes = [_folder_outcome(p) for p in tree.problems]

    def assess_all(part: list) -> list[Outcome]:
        return [_safely(c, facts, verify) for c in domains.read_all_configs(part, clean)]

    cores = os.cpu_count() or 1
    if parallel and facts.held is None and cores > 1 and len(found) >= PARALLEL_FROM:
        half = len(found) // 2
        child = _in_child(lambda: assess_all(found[half:]))
        return outcomes + assess_all(found[:half]) + child()
    return outcomes + assess_all(found)


def _in_child(work):
    """Start work in a forked child; the returned function waits for its outcomes (without
    the files' bytes or folders), or does the work here when the child could not deliver."""
    import pickle

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: findings only, then leave without cleanup
        status = 1
        try:
            os.close(read_end)
            done = [
                Outcome(o.config._replace(data=None, folder=None), o.findings, o.new_data)
                for o in work()
            ]
            data = pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)

    def collect() -> list[Outcome]:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status == 0:
            try:
                return pickle.loads(data)
            except Exception:
                pass
        return work()

    return collect
