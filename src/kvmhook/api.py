"""kvmhook's Python API: check, fix and undo, each returning one Result.

The command line, the portage hook and the Ansible module render these results; they hold
no logic of their own. Every function raises KvmhookError, and only that, when it could not
do its job; findings (even errors) are part of a Result, not exceptions.

    >>> from kvmhook import api
    >>> result = api.check("/", targets=["x86_64"])
    >>> [f.kind for f in result.findings if f.severity == "error"]
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Iterable, Sequence

from . import libvirt, merge, rules, scan
from .domains import Folder, Pattern
from .errors import KvmhookError
from .findings import Finding, has_errors

__all__ = ["KvmhookError", "Result", "check", "fix", "undo", "runs", "hook"]

Targets = str | Iterable[str] | None


class Result:
    """What one check, fix, undo or hook run found and did. Immutable.

    command: "check", "fix", "undo" or "hook"; root: the absolute ROOT.
    findings: what is left to see to (after a fix, what it did not fix).
    changes: the findings a fix fixed, or with dry_run would fix (a daemon brought in line
      is a "daemon-differs" change).
    fixed: the files written (undo: restored); planned: with dry_run, the files a fix would
      write or tell its daemon about.
    backup: the backup run folder that undo restores from, or None.
    synced: what became of each daemon copy (libvirt.Synced).
    daemon: the daemon link (libvirt.Daemon); merge: the pending qemu merge (merge.Merge), or
      None for undo; scanned: (folder, number of configs) for each folder read, or None.
    diffs: (file, its unified diff) for each file written (or, dry_run, to be written), when
      asked for, else None; diff joins them.
    fix_command, undo_command: the shell commands that fix or undo what this run saw.
    mode: the hook's mode ("explain", "fix" or "warn"), else None.
    """

    __slots__ = (
        "command",
        "root",
        "findings",
        "changes",
        "fixed",
        "planned",
        "backup",
        "synced",
        "daemon",
        "merge",
        "scanned",
        "diffs",
        "dry_run",
        "fix_command",
        "undo_command",
        "mode",
    )

    def __init__(
        self,
        command: str,
        root: str,
        daemon: libvirt.Daemon,
        *,
        findings: Sequence[Finding] = (),
        changes: Sequence[Finding] = (),
        fixed: Sequence[str] = (),
        planned: Sequence[str] = (),
        backup: str | None = None,
        synced: Sequence[libvirt.Synced] = (),
        merge: merge.Merge | None = None,
        scanned: Sequence[tuple[str, int]] | None = None,
        diffs: Sequence[tuple[str, str]] | None = None,
        dry_run: bool = False,
        fix_command: str = "",
        undo_command: str = "",
        mode: str | None = None,
    ):
        values = dict(
            command=command,
            root=root,
            daemon=daemon,
            findings=tuple(findings),
            changes=tuple(changes),
            fixed=tuple(fixed),
            planned=tuple(planned),
            backup=backup,
            synced=tuple(synced),
            merge=merge,
            scanned=tuple(scanned) if scanned is not None else None,
            diffs=tuple(diffs) if diffs is not None else None,
            dry_run=dry_run,
            fix_command=fix_command,
            undo_command=undo_command,
            mode=mode,
        )
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a kvmhook Result is immutable ({name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a kvmhook Result is immutable ({name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # equal by value, holding lists of values

    def __repr__(self) -> str:
        return (
            f"Result({self.command!r}, {self.root!r}, {len(self.findings)} finding(s),"
            f" {len(self.fixed)} file(s) written, backup={self.backup!r})"
        )

    @property
    def diff(self) -> str | None:
        return None if self.diffs is None else "".join(text for _, text in self.diffs)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def has_errors(self) -> bool:
        return has_errors(self.findings)

    @property
    def changed(self) -> bool:
        """Whether the run changed a file or a daemon (dry_run: whether a fix would)."""
        if self.dry_run:
            return bool(self.planned)
        return bool(self.fixed) or any(s.verified for s in self.synced)

    @property
    def stop(self) -> bool:
        """For the hook: whether the qemu merge must stop."""
        return self.has_errors and self.mode != "warn"


def check(
    root: str = "/",
    *,
    session: bool = False,
    targets: Targets = None,
    qemu_version: str | None = None,
    installed_version: str | None = None,
    connect: str | None = None,
) -> Result:
    """Read every domain config under root (with session, the users' folders too) and say
    what the pending qemu merge would break. Writes nothing."""
    with _OneError():
        options = _Options(root, session, targets, qemu_version, installed_version, connect)
        link = _attach(options)
        try:
            facts = _facts(options, link)
            with _tree(options, warn_missing=True) as tree:
                outcomes = scan.scan(tree, facts, parallel=True)
                scanned = tree.counts()
        finally:
            link.close()
        return _result("check", options, link, scanned, findings=_findings(outcomes))


def fix(
    root: str = "/",
    *,
    session: bool = False,
    targets: Targets = None,
    qemu_version: str | None = None,
    installed_version: str | None = None,
    keep_type: bool = False,
    machines: bool = False,
    dry_run: bool = False,
    diff: bool = False,
    connect: str | None = None,
) -> Result:
    """Fix what can be fixed, with backups, and bring a reached daemon in line.

    keep_type keeps type='qemu' domains on TCG; machines also moves domains off machine types
    the pending qemu removes. dry_run writes nothing and fills in the diff; diff=True adds the
    diff of what a real run wrote."""
    with _OneError():
        options = _Options(root, session, targets, qemu_version, installed_version, connect)
        link = _attach(options)
        try:
            facts = _facts(options, link, keep_type=keep_type, update_machines=machines)
            with _tree(options, warn_missing=True) as tree:
                # a dry run shows verified edits; a real run verifies them under the lock
                outcomes = scan.scan(tree, facts, verify=dry_run)
                scanned = tree.counts()
                if dry_run:
                    return _result(
                        "fix",
                        options,
                        link,
                        scanned,
                        findings=_findings(outcomes),
                        changes=_planned_changes(outcomes),
                        planned=[o.config.path for o in outcomes if o.new_data or o.daemon_behind],
                        diffs=_diffs(outcomes),
                        dry_run=True,
                    )
                done = _transaction(options.root, tree, facts, outcomes, link, diff)
        finally:
            link.close()
        return _fixed_result("fix", options, link, done, scanned)


def hook(
    root: str = "/",
    *,
    mode: str = "explain",
    machines: str = "stop",
    session: bool = False,
    targets: Targets = None,
    qemu_version: str | None = None,
    installed_version: str | None = None,
    connect: str | None = None,
) -> Result:
    """What the portage snippet runs in qemu's pretend phase: the facts come from portage's
    environment (portage itself is not asked), mode "fix" fixes, and machines "warn" turns
    the machine-type errors into warnings. A fix that fails raises KvmhookError; its intact
    says that every original is as it was."""
    with _OneError():
        if mode not in ("explain", "fix", "warn"):
            raise KvmhookError(f"hook: unknown mode {mode!r} (explain, fix or warn)")
        if machines not in ("stop", "warn", "update"):
            raise KvmhookError(f"hook: unknown machines {machines!r} (stop, warn or update)")
        if mode != "fix" and machines == "update":
            machines = "stop"  # machine types change only in fix mode
        options = _Options(
            root, session, targets, qemu_version, installed_version, connect, from_hook=True
        )
        link = _attach(options)
        try:
            facts = _facts(options, link, update_machines=machines == "update")
            with _tree(options) as tree:
                outcomes = scan.scan(tree, facts, parallel=mode != "fix")
                scanned = tree.counts()
                done = None
                if mode == "fix":
                    done = _transaction(options.root, tree, facts, outcomes, link, False)
        finally:
            link.close()
        if done is not None:
            result = _fixed_result("hook", options, link, done, scanned)
        else:
            result = _result("hook", options, link, scanned, findings=_findings(outcomes))
        findings = result.findings
        if machines == "warn":  # KVMHOOK_MACHINES=warn: the user accepts it
            findings = tuple(
                f._replace(severity="warning")
                if f.kind in ("removed-machine", "saved-state")
                else f
                for f in findings
            )
        return _replace(result, findings=findings, mode=mode)


def undo(
    root: str = "/", *, run: str | None = None, connect: str | None = None, dry_run: bool = False
) -> Result:
    """Put back the files of the last fix run (or of run, an id from runs()), refusing any
    file changed since; a reached daemon is told about each restored file. With dry_run,
    nothing is written and no daemon is asked: planned holds the files the run would put
    back, and backup the run."""
    with _OneError():
        from . import store

        root = root_folder(root)
        if dry_run:
            return _undo_plan(root, run)
        link = libvirt.attach(connect, root, False)
        synced: list[libvirt.Synced] = []
        undone = store.UndoResult(None, (), ())
        try:
            state = store.open_state(root, create=False)
            if state is not None:
                try:
                    # every folder this run may write: undo restores what any fix wrote
                    with scan.Tree(root, True, system=True) as tree, store.lock(state):
                        store.clean_stale_temps(tree.folders, state)
                        undone = store.undo(state, tree.folders, run)
                        by_path = {f.path: f for f in tree.folders}
                        files = []
                        for path in undone.restored:
                            folder, name = by_path[os.path.dirname(path)], os.path.basename(path)
                            current = store.read_at(folder.fd, name)
                            if current is not None:
                                files.append((folder, name, current[0]))
                        synced = _sync(link, files)
                finally:
                    state.close()
        finally:
            link.close()
        refusals = [
            Finding(
                file=path,
                line=None,
                domain=None,
                kind="undo-refused",
                severity="error",
                current=None,
                proposed=None,
                message=f"not restored: {why}",
            )
            for path, why in undone.refused
        ]
        return Result(
            "undo",
            root,
            link.state(),
            findings=_not_updated(synced, refusals),
            fixed=undone.restored,
            backup=undone.run,
            synced=synced,
            undo_command=undo_command(root),
        )


def _undo_plan(root: str, run: str | None) -> Result:
    daemon = libvirt.Daemon(None, False, None, "no libvirt daemon asked: a dry run")
    for found in runs(root):
        if found.id == run or (run is None and found.state != "undone"):
            held = sorted(e.path for e in found.entries if not e.restored)
            return Result(
                "undo",
                root,
                daemon,
                planned=held,
                backup=found.folder,
                dry_run=True,
                undo_command=undo_command(root),
            )
    if run is not None:
        raise KvmhookError(f"no backup run {run!r} (kvmhook undo --list)")
    return Result("undo", root, daemon, dry_run=True, undo_command=undo_command(root))


def runs(root: str = "/") -> tuple:
    """Every backup run under root (store.Run values), newest first."""
    with _OneError():
        from . import store

        root = root_folder(root)
        state = store.open_state(root, create=False)
        if state is None:
            return ()
        try:
            return tuple(store.runs(state))
        finally:
            state.close()


# The commands a person runs next.


def fix_command(root: str, targets: frozenset[str] | None = None, session: bool = False) -> str:
    """The shell command that fixes what a run with these options found."""
    words = ["kvmhook", "fix"]
    if root != "/":
        words += ["--root", root]
    if targets is not None:
        words += ["--targets", ",".join(sorted(targets)) or "''"]
    if session:
        words.append("--session")
    return " ".join(shell_quote(w) if w != "''" else w for w in words)


def undo_command(root: str) -> str:
    """The shell command that puts back what the last fix run under root wrote."""
    return "kvmhook undo" + ("" if root == "/" else f" --root {shell_quote(root)}")


_SHELL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def shell_quote(word: str) -> str:
    """shlex.quote(word), without the regular expression module it imports."""
    if not word:
        return "''"
    if all(c in _SHELL_SAFE for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


# Inside.

_VERSION = Pattern(r"[0-9][0-9A-Za-z._]*")


def root_folder(value: str) -> str:
    root = os.path.abspath(value)
    if not os.path.isdir(root):
        raise KvmhookError(f"--root: {value} is not a folder")
    return root


def parse_targets(value: Targets) -> frozenset[str] | None:
    """QEMU softmmu target names from "a,b c" or a list of names; None stays None."""
    if value is None:
        return None
    import re

    if isinstance(value, str):
        names = [n for n in re.split(r"[,\s]+", value) if n]
    else:
        names = [str(n).strip() for n in value if str(n).strip()]
    if not names:
        raise KvmhookError("--targets: empty; name the QEMU softmmu targets, such as x86_64")
    bad = [n for n in names if not re.fullmatch(r"[a-z0-9_]+", n)]
    if bad:
        raise KvmhookError(f"--targets: {bad[0]!r} is not a QEMU softmmu target name")
    return frozenset(names)


class _Options:
    """The arguments every scanning run shares, checked, with the pending merge."""

    def __init__(
        self,
        root: str,
        session: bool,
        targets: Targets,
        qemu_version: str | None,
        installed_version: str | None,
        connect: str | None,
        from_hook: bool = False,
    ):
        self.root = root_folder(root)
        self.session, self.connect = bool(session), connect
        self.installed_version = installed_version
        for option, value in (
            ("--qemu-version", qemu_version),
            ("--installed-version", installed_version),
        ):
            if value is not None and not _VERSION.fullmatch(value):
                raise KvmhookError(f"{option}: {value!r} is not a version such as 10.1.0")
        self.targets = parse_targets(targets)
        # The hook's facts come from portage's environment, never from portage itself.
        self.merge = merge.facts(self.root, self.targets, qemu_version, ask_portage=not from_hook)
        if self.targets is not None and not from_hook:
            for name in sorted(self.targets):
                if why := merge.unknown_target(name, self.merge.known):
                    raise KvmhookError(f"--targets: {why}")

    def fix_command(self) -> str:
        return fix_command(self.root, self.targets, self.session)

    def undo_command(self) -> str:
        return undo_command(self.root)


def _attach(options: _Options) -> libvirt.Link:
    return libvirt.attach(options.connect, options.root, options.session)


def _tree(options: _Options, warn_missing: bool = False) -> scan.Tree:
    return scan.Tree(options.root, options.session, warn_missing=warn_missing)


def _facts(
    options: _Options,
    link: libvirt.Link,
    keep_type: bool = False,
    update_machines: bool = False,
) -> rules.Facts:
    from . import qemu
    from .domains import saved_states

    pending = options.merge
    release = qemu.parse_version(pending.pending) if pending.pending else None
    now = [qemu.parse_version(v) for v in pending.installed]
    if options.installed_version:
        now = [qemu.parse_version(options.installed_version)]
    now = [v for v in now if v is not None]
    return rules.Facts(
        host_arch=os.uname().machine,
        installed=rules.installed_targets(options.root),
        targets=pending.targets,
        keep_type=keep_type,
        held=link.held(),
        daemon=link.uri,
        daemon_folder=link.folder,
        pending=release,
        qemu_now=max(now) if now else None,
        saved=saved_states(options.root) if release is not None else None,
        update_machines=update_machines,
    )


def _findings(outcomes: Sequence[scan.Outcome]) -> list[Finding]:
    return [f for o in outcomes for f in o.findings]


def _planned_changes(outcomes: Sequence[scan.Outcome]) -> list[Finding]:
    changes = [f for o in outcomes for f in o.changes]
    return changes + [
        f for o in outcomes if o.daemon_behind for f in o.findings if f.kind == "daemon-differs"
    ]


def _diffs(outcomes: Sequence[scan.Outcome]) -> list[tuple[str, str]]:
    from . import edit

    return [
        (o.config.path, edit.unified_diff(o.config.path, o.config.data or b"", o.new_data))
        for o in outcomes
        if o.new_data is not None
    ]


class _Done(namedtuple("_Done", "changes run after synced diffs")):
    """What the fix transaction did."""

    __slots__ = ()


def _result(
    command: str,
    options: _Options,
    link: libvirt.Link,
    scanned: Sequence[tuple[str, int]],
    **fields: object,
) -> Result:
    """A result of a run that scanned: what every such result says, and fields."""
    return Result(
        command,
        options.root,
        link.state(),
        merge=options.merge,
        scanned=scanned,
        fix_command=options.fix_command(),
        undo_command=options.undo_command(),
        **fields,
    )


def _fixed_result(
    command: str,
    options: _Options,
    link: libvirt.Link,
    done: _Done,
    scanned: Sequence[tuple[str, int]],
) -> Result:
    fixed = sorted({f.file for f in done.changes if f.change and f.change.what != "daemon"})
    return _result(
        command,
        options,
        link,
        scanned,
        findings=_not_updated(done.synced, _findings(done.after)),
        changes=done.changes,
        fixed=fixed,
        backup=done.run,
        synced=done.synced,
        diffs=done.diffs,
    )


def _transaction(
    root: str,
    tree: scan.Tree,
    facts: rules.Facts,
    outcomes: list[scan.Outcome],
    link: libvirt.Link,
    want_diff: bool,
) -> _Done:
    """Under the lock: scan again, write with backups, bring the daemon in line, scan again."""
    from . import store

    if not any(o.new_data is not None or o.daemon_behind for o in outcomes):
        if store.stale_temps(tree.folders):
            _clean_up(tree)
        return _Done([], None, outcomes, [], [] if want_diff else None)
    state = store.open_state(root, create=True)
    try:
        with store.lock(state):
            store.clean_stale_temps(tree.folders, state)
            # Another run may have fixed some files while this one waited.
            todo = [o for o in scan.scan(tree, facts) if o.new_data or o.daemon_behind]
            edited = [o for o in todo if o.new_data is not None]
            run = None
            if edited:
                plans = [
                    store.Planned(o.config.folder, o.config.name, o.config.data, o.new_data)
                    for o in edited
                ]
                run = store.replace_files(state, plans)
            files = [(o.config.folder, o.config.name, o.new_data or o.config.data) for o in todo]
            synced = _sync(link, files)
            if run:
                folders = {os.path.join(f.path, n): (f, n) for f, n, _ in files}
                for s in synced:
                    if s.how == "defined":  # the daemon wrote the file in its own format
                        store.note_rewrite(state, run, *folders[s.path])
            facts = facts._replace(held=link.held())
            after = scan.scan(tree, facts)
    finally:
        state.close()
    return _Done(_planned_changes(todo), run, after, synced, _diffs(edited) if want_diff else None)


class _OneError:
    """Turns an OSError into KvmhookError, the API's one exception type."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, err: BaseException | None, tb: object) -> bool:
        if isinstance(err, OSError):
            where = f" ({err.filename})" if err.filename else ""
            raise KvmhookError(f"{err.strerror or err}{where}") from err
        return False


def _clean_up(tree: scan.Tree) -> None:
    """Remove a killed run's temporary files, under the lock."""
    from . import store

    state = store.open_state(tree.root, create=True)
    try:
        with store.lock(state):
            store.clean_stale_temps(tree.folders, state)
    finally:
        state.close()


def _sync(link: libvirt.Link, files: list[tuple[Folder, str, bytes]]) -> list[libvirt.Synced]:
    """Bring the daemon in line with each file, for the files in its own folder only."""
    done = [
        libvirt.sync(link.conn, link.uri, os.path.join(folder.path, name), data)
        for folder, name, data in files
        if link.owns(folder.identity)
    ]
    return [s for s in done if s is not None]


def _not_updated(synced: Sequence[libvirt.Synced], findings: list[Finding]) -> list[Finding]:
    """Findings with each daemon that could not be brought in line said once, as an error."""
    failed = {s.path: s for s in synced if not s.verified}
    kept = [f for f in findings if not (f.file in failed and f.kind == "daemon-differs")]
    return kept + [
        Finding(
            file=s.path,
            line=None,
            domain=s.domain,
            kind="daemon-not-updated",
            severity="error",
            current=None,
            proposed=None,
            message=s.note,
        )
        for s in failed.values()
    ]


def _replace(result: Result, **changes: object) -> Result:
    values = {n: getattr(result, n) for n in Result.__slots__}
    values.update(changes)
    command, root, daemon = values.pop("command"), values.pop("root"), values.pop("daemon")
    return Result(command, root, daemon, **values)
