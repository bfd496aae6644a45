"""Command line: kvmhook check | fix | undo."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

from . import __version__, libvirt, merge, report, rules, scan
from .domains import Folder, Pattern
from .findings import Finding, has_errors

TYPE_CHECKING = False  # typing itself costs 3 ms
if TYPE_CHECKING:  # argparse costs some 10 ms at start: plain check and hook go without it
    import argparse

EXIT_OK, EXIT_FINDINGS, EXIT_FAILED = 0, 1, 2


class UsageError(Exception):
    pass


def _targets(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    import re

    names = [n for n in re.split(r"[,\s]+", value) if n]
    if not names:
        raise UsageError("--targets: empty; name the QEMU softmmu targets, such as x86_64")
    bad = [n for n in names if not re.fullmatch(r"[a-z0-9_]+", n)]
    if bad:
        raise UsageError(f"--targets: {bad[0]!r} is not a QEMU softmmu target name")
    return frozenset(names)


_VERSION = Pattern(r"[0-9][0-9A-Za-z._]*")


def _merge(args: argparse.Namespace, root: str) -> merge.Merge:
    """The pending merge: options first, then portage (never from the hook, whose
    options come from portage's own environment)."""
    version = args.qemu_version
    for option, value in (
        ("--qemu-version", version),
        ("--installed-version", args.installed_version),
    ):
        if value is not None and not _VERSION.fullmatch(value):
            raise UsageError(f"{option}: {value!r} is not a version such as 10.1.0")
    targets = _targets(args.targets)
    hook = args.func is cmd_hook
    found = merge.facts(root, targets, version, ask_portage=not hook)
    if targets is not None and not hook:
        for name in sorted(targets):
            if why := merge.unknown_target(name, found.known):
                raise UsageError(f"--targets: {why}")
    return found


def _root(value: str) -> str:
    root = os.path.abspath(value)
    if not os.path.isdir(root):
        raise UsageError(f"--root: {value} is not a folder")
    return root


def _facts(
    args: argparse.Namespace, root: str, link: libvirt.Link, pending: merge.Merge
) -> rules.Facts:
    from . import qemu
    from .domains import saved_states

    release = qemu.parse_version(pending.pending) if pending.pending else None
    now = [qemu.parse_version(v) for v in pending.installed]
    if args.installed_version:
        now = [qemu.parse_version(args.installed_version)]
    now = [v for v in now if v is not None]
    return rules.Facts(
        host_arch=os.uname().machine,
        installed=rules.installed_targets(root),
        targets=pending.targets,
        keep_type=getattr(args, "keep_type", False),
        held=link.held(),
        daemon=link.uri,
        daemon_folder=link.folder,
        pending=release,
        qemu_now=max(now) if now else None,
        saved=saved_states(root) if release is not None else None,
        update_machines=getattr(args, "machines", None) in (True, "update"),
    )


def _link(args: argparse.Namespace, root: str) -> libvirt.Link:
    return libvirt.attach(args.connect, root, getattr(args, "session", False))


def _fix_command(args: argparse.Namespace, root: str) -> str:
    import shlex

    words = ["kvmhook", "fix"]
    if root != "/":
        words += ["--root", root]
    if args.targets is not None:
        words += ["--targets", ",".join(sorted(_targets(args.targets) or ())) or "''"]
    if args.session:
        words.append("--session")
    return " ".join(shlex.quote(w) if w != "''" else w for w in words)


def _undo_command(root: str) -> str:
    import shlex

    return "kvmhook undo" + ("" if root == "/" else f" --root {shlex.quote(root)}")


def _findings(outcomes: Sequence[scan.Outcome]) -> list[Finding]:
    return [f for o in outcomes for f in o.findings]


def _emit(
    args: argparse.Namespace,
    root: str,
    findings: list[Finding],
    head: Sequence[str] = (),
    fixed: Sequence[str] = (),
    backup: str | None = None,
    **extra: object,
) -> int:
    if args.json:
        sys.stdout.write(report.render_json(root, findings, fixed, backup, **extra))
    else:
        colour = report.use_colour(sys.stdout)
        command = _fix_command(args, root) if hasattr(args, "targets") else ""
        clean = "" if hasattr(args, "targets") else "Done."
        sys.stdout.write(report.render_text(findings, command, colour, head, clean))
    return EXIT_FINDINGS if has_errors(findings) else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    root = _root(args.root)
    pending = _merge(args, root)
    link = _link(args, root)
    colour = report.use_colour(sys.stdout) and not args.json
    with scan.Tree(root, args.session, warn_missing=True) as tree:
        outcomes = scan.scan(tree, _facts(args, root, link, pending), parallel=True)
        head, extra = _read_what(pending, root, tree, colour)
    link.close()
    head.append(report.info(link.note, colour))
    return _emit(args, root, _findings(outcomes), head, daemon=link.as_json(), **extra)


def _read_what(
    pending: merge.Merge, root: str, tree: scan.Tree, colour: bool
) -> tuple[list[str], dict]:
    """The lines and JSON that say what the merge is taken to be and what was read where."""
    scanned = tree.counts()
    lines = [report.info(pending.line(root), colour), *_scanned_lines(scanned, colour)]
    said = {
        "merge": pending.as_json(),
        "scanned": [{"folder": f, "configs": n} for f, n in scanned],
    }
    return lines, said


def _scanned_lines(scanned: list[tuple[str, int]], colour: bool) -> list[str]:
    """How many configs were read where: nothing read is never an all-clear."""
    if not scanned:
        return [report.info("Read no domain configs: no config folder was found.", colour)]
    text = report.scanned_text(scanned)
    return [report.info(f"Read {sum(n for _, n in scanned)} domain config(s): {text}", colour)]


def _apply_fix(
    root: str,
    tree: scan.Tree,
    facts: rules.Facts,
    outcomes: list[scan.Outcome],
    link: libvirt.Link,
) -> tuple[list[Finding], str | None, list[scan.Outcome], list[libvirt.Synced]]:
    """(the findings fixed, the backup folder, what is left, daemon syncs) after fixing."""
    from . import store

    if not any(o.new_data is not None or o.daemon_behind for o in outcomes):
        if store.stale_temps(tree.folders):
            _clean_up(root, tree)
        return [], None, outcomes, []
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
    changes = [f for o in todo for f in o.changes]
    changes += [
        f for o in todo if o.daemon_behind for f in o.findings if f.kind == "daemon-differs"
    ]
    return changes, run, after, synced


def _clean_up(root: str, tree: scan.Tree) -> None:
    """Remove a killed run's temporary files, under the lock."""
    from . import store

    state = store.open_state(root, create=True)
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


def cmd_fix(args: argparse.Namespace) -> int:
    root = _root(args.root)
    pending = _merge(args, root)
    link = _link(args, root)
    facts = _facts(args, root, link, pending)
    colour = report.use_colour(sys.stdout) and not args.json
    with scan.Tree(root, args.session, warn_missing=True) as tree:
        # a dry run shows verified edits; a real run verifies them under the lock
        outcomes = scan.scan(tree, facts, verify=args.dry_run)
        first, extra = _read_what(pending, root, tree, colour)
        if args.dry_run:
            link.close()
            from . import edit

            diff = "".join(
                edit.unified_diff(o.config.path, o.config.data or b"", o.new_data)
                for o in outcomes
                if o.new_data is not None
            )
            if not args.json:
                sys.stdout.write(report.clean_diff(diff))
            head = [*first, report.info(link.note, colour)]
            return _emit(
                args, root, _findings(outcomes), head, diff=diff, daemon=link.as_json(), **extra
            )
        try:
            changes, run, outcomes, synced = _apply_fix(root, tree, facts, outcomes, link)
        finally:
            link.close()
    head = first + [report.change_line(f, colour) for f in changes]
    if run:
        head.append(
            report.info(f"Backups in {run}; to put the files back: {_undo_command(root)}", colour)
        )
    head.append(report.info(link.note, colour))
    head += [line for s in synced for line in report.sync_lines(s, link.uri, colour)]
    fixed = sorted({f.file for f in changes if f.change and f.change.what != "daemon"})
    return _emit(
        args,
        root,
        _not_updated(synced, _findings(outcomes)),
        head,
        fixed,
        run,
        changes=[f.as_json() for f in changes],
        daemon=link.as_json(),
        synced=[s.as_json() for s in synced],
        **extra,
    )


def cmd_undo(args: argparse.Namespace) -> int:
    from . import store

    root = _root(args.root)
    if args.list:
        return _list_runs(args, root)
    link = _link(args, root)
    synced: list[libvirt.Synced] = []
    result = store.UndoResult(None, (), ())
    state = store.open_state(root, create=False)
    if state is not None:
        try:
            # every folder this run may write: undo restores what any fix wrote
            with scan.Tree(root, True, system=True) as tree, store.lock(state):
                store.clean_stale_temps(tree.folders, state)
                result = store.undo(state, tree.folders, args.run)
                by_path = {f.path: f for f in tree.folders}
                files = []
                for path in result.restored:
                    folder, name = by_path[os.path.dirname(path)], os.path.basename(path)
                    current = store.read_at(folder.fd, name)
                    if current is not None:
                        files.append((folder, name, current[0]))
                synced = _sync(link, files)
        finally:
            state.close()
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
        for path, why in result.refused
    ]
    colour = report.use_colour(sys.stdout) and not args.json
    if result.run is None:
        head = [report.info("Nothing to undo: no fix run has backups here.", colour)]
    else:
        head = [report.info(f"Restored {path}", colour) for path in result.restored]
        head.append(report.info(f"from {result.run}", colour))
    head.append(report.info(link.note, colour))
    head += [line for s in synced for line in report.sync_lines(s, link.uri, colour)]
    return _emit(
        args,
        root,
        _not_updated(synced, refusals),
        head,
        result.restored,
        result.run,
        daemon=link.as_json(),
        synced=[s.as_json() for s in synced],
    )


def _list_runs(args: argparse.Namespace, root: str) -> int:
    from . import store

    state = store.open_state(root, create=False)
    try:
        found = store.runs(state) if state is not None else []
    finally:
        if state is not None:
            state.close()
    if args.json:
        doc = {"schema": report.SCHEMA, "root": root, "runs": [r.as_json() for r in found]}
        sys.stdout.write(report.dumps(doc) + "\n")
        return EXIT_OK
    colour = report.use_colour(sys.stdout)
    lines = [report.info("No fix run has backups here.", colour)] if not found else []
    for run in found:
        held = [e for e in run.entries if not e.restored]
        state_text = "undone" if run.state == "undone" else "not undone"
        lines.append(
            report.info(
                f"{run.id} ({state_text}): {len(held)} of {len(run.entries)} file(s)"
                " still held here",
                colour,
            )
        )
        lines += [report.info(f"  {e.path} <- {e.backup}", colour) for e in held]
    if found:
        lines.append(report.info("Undo one run: kvmhook undo --run ID", colour))
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


HOOK_STOP = 3  # tells the bash snippet to die


def cmd_hook(args: argparse.Namespace) -> int:
    """The portage snippet's entry: print 'eerror|ewarn|elog TEXT' lines for portage."""
    from . import store

    root = _root(args.root)
    link = _link(args, root)
    if args.mode != "fix" and args.machines == "update":
        args.machines = "stop"  # machine types change only in fix mode
    facts = _facts(args, root, link, _merge(args, root))
    commands = (_fix_command(args, root), _undo_command(root))
    lines: list[str] = []
    synced: list[libvirt.Synced] = []
    with scan.Tree(root, args.session) as tree:
        outcomes = scan.scan(tree, facts, parallel=args.mode != "fix")
        scanned = report.scanned_text(tree.counts()) or "none"
        lines.append(f"einfo kvmhook: read the libvirt domain configs: {scanned}")
        if args.mode == "fix":
            try:
                changes, run, outcomes, synced = _apply_fix(root, tree, facts, outcomes, link)
            except store.StoreError as err:
                lines = report.portage_failure(str(err))
                print("\n".join(report.for_portage(line) for line in lines))
                return HOOK_STOP
            finally:
                link.close()
            lines += report.portage_changes(changes, run, commands[1])
            lines += [
                f"elog {text.strip()}" for s in synced for text in report.sync_texts(s, link.uri)
            ]
            if run and link.conn is None:
                lines.append(f"elog kvmhook: {link.note}")
    link.close()
    findings = _not_updated(synced, _findings(outcomes))
    if args.machines == "warn":  # KVMHOOK_MACHINES=warn: the user accepts it
        findings = [
            f._replace(severity="warning") if f.kind in ("removed-machine", "saved-state") else f
            for f in findings
        ]
    stop = has_errors(findings) and args.mode != "warn"
    lines += report.portage_findings(findings, commands, stop, args.mode)
    if lines:
        print("\n".join(report.for_portage(line) for line in lines))
    return HOOK_STOP if stop else EXIT_OK


def cmd_install_hook(args: argparse.Namespace) -> int:
    """Wire the snippet, then run it once as portage would: the exit status says whether
    the hook is wired and kvmhook answers, not whether configs are stale."""
    from . import hook

    root = _root(args.root)
    try:
        path, changed = hook.install(root)
    except hook.HookError as err:
        raise UsageError(f"install-hook: {err}") from None
    print(f"{'Wired' if changed else 'Already wired'}: {path} sources {hook.snippet_path(root)}")
    answered, lines = hook.try_hook(root)
    for line in lines:
        print(f"  {report.clean(line)}")
    if not answered:
        print(
            "kvmhook: the wired hook did not answer in a simulated qemu pretend phase (above)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print("The hook answers: kvmhook ran in a simulated qemu pretend phase (nothing merged).")
    return EXIT_OK


def cmd_uninstall_hook(args: argparse.Namespace) -> int:
    from . import hook

    path, changed = hook.uninstall(_root(args.root))
    print(f"{'Removed the kvmhook line from' if changed else 'No kvmhook line in'} {path}")
    return EXIT_OK


def cmd_hook_path(args: argparse.Namespace) -> int:
    from . import hook

    print(hook.snippet_path(_root(args.root)))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    import argparse

    class _Formatter(argparse.HelpFormatter):
        """argparse's formatter, sized without shutil: argparse builds one per option."""

        def __init__(self, prog: str):
            try:
                width = os.get_terminal_size(sys.stdout.fileno()).columns
            except (OSError, ValueError):
                width = 80
            super().__init__(prog, width=max(width - 2, 40))

    parser = argparse.ArgumentParser(
        formatter_class=_Formatter,
        prog="kvmhook",
        description="Find and safely fix stale qemu-kvm emulator paths in libvirt domain configs.",
    )
    parser.add_argument("--version", action="version", version=f"kvmhook {__version__}")
    # A prog here spares argparse a help formatter (and shutil) at every start.
    sub = parser.add_subparsers(dest="command", required=True, prog="kvmhook")

    def common(p: argparse.ArgumentParser, scanning: bool) -> None:
        p.add_argument("--root", default="/", help="the system's root folder (default /)")
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument(
            "--connect",
            metavar="URI",
            help="the libvirt daemon that owns the configs (default: LIBVIRT_DEFAULT_URI, else"
            " qemu:///system for --root / when its socket exists)",
        )
        if scanning:
            p.add_argument(
                "--targets",
                metavar="LIST",
                help="the QEMU_SOFTMMU_TARGETS the pending qemu merge installs (comma-separated;"
                " default: from portage on a Gentoo root, else the binaries in ROOT/usr/bin)",
            )
            p.add_argument(
                "--qemu-version",
                metavar="V",
                help="the app-emulation/qemu version about to be merged (default: from portage)",
            )
            p.add_argument(
                "--installed-version",
                metavar="V",
                help="the app-emulation/qemu version installed now (default: from portage)",
            )
            p.add_argument(
                "--session", action="store_true", help="also the users' session config folders"
            )

    check = sub.add_parser(
        "check", formatter_class=_Formatter, help="report stale references; writes nothing"
    )
    common(check, True)
    check.set_defaults(func=cmd_check)
    fix = sub.add_parser(
        "fix", formatter_class=_Formatter, help="fix what can be fixed, with backups"
    )
    common(fix, True)
    fix.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    fix.add_argument(
        "--keep-type", action="store_true", help="keep type='qemu' domains on TCG emulation"
    )
    fix.add_argument(
        "--machines",
        action="store_true",
        help="also move domains off machine types the pending qemu removes (the guest sees"
        " new hardware)",
    )
    fix.set_defaults(func=cmd_fix)
    undo = sub.add_parser(
        "undo", formatter_class=_Formatter, help="restore the files of the last fix run"
    )
    common(undo, False)
    undo.add_argument("--run", metavar="ID", help="undo this run (see --list), not the last")
    undo.add_argument(
        "--list", action="store_true", help="list the backup runs and what each still holds"
    )
    undo.set_defaults(func=cmd_undo)

    run_hook = sub.add_parser(
        "hook", formatter_class=_Formatter, help="what the portage snippet runs (prints elog lines)"
    )
    common(run_hook, True)
    run_hook.add_argument("--mode", choices=("explain", "fix", "warn"), default="explain")
    run_hook.add_argument(
        "--machines",
        choices=("stop", "warn", "update"),
        default="stop",
        help="machine types the merge removes: stop the merge (default), warn, or (with"
        " --mode fix) update them",
    )
    run_hook.set_defaults(func=cmd_hook, keep_type=False)
    for name, func, text in (
        ("install-hook", cmd_install_hook, "source the snippet from ROOT/etc/portage/bashrc"),
        ("uninstall-hook", cmd_uninstall_hook, "remove that line again"),
        ("hook-path", cmd_hook_path, "print where the snippet is installed"),
    ):
        p = sub.add_parser(name, formatter_class=_Formatter, help=text)
        p.add_argument("--root", default="/", help="the system's root folder (default /)")
        p.set_defaults(func=func)
    return parser


_PLAIN = {
    "check": (cmd_check, {}, ()),
    "hook": (
        cmd_hook,
        {"mode": "explain", "machines": "stop", "keep_type": False},
        (("mode", ("explain", "fix", "warn")), ("machines", ("stop", "warn", "update"))),
    ),
}
_PLAIN_FLAGS = {"--json": "json", "--session": "session"}
_PLAIN_OPTIONS = {
    "--root": "root",
    "--connect": "connect",
    "--targets": "targets",
    "--qemu-version": "qemu_version",
    "--installed-version": "installed_version",
}


def plain_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """A check or hook command line of whole, known options, read without argparse (it
    costs some 10 ms at every start); anything else (help, an abbreviation, --opt=value,
    a mistake) is None, and argparse reads it."""
    if not argv or argv[0] not in _PLAIN:
        return None
    func, extra, choices = _PLAIN[argv[0]]
    values = {"root": "/", "json": False, "connect": None, "targets": None, "session": False}
    values.update(qemu_version=None, installed_version=None, **extra)
    options = {**_PLAIN_OPTIONS, **{f"--{name}": name for name in extra if name != "keep_type"}}
    rest = list(argv[1:])
    while rest:
        word = rest.pop(0)
        if word in _PLAIN_FLAGS:
            values[_PLAIN_FLAGS[word]] = True
        elif word in options and rest and not rest[0].startswith("-"):
            values[options[word]] = rest.pop(0)
        else:
            return None
    if any(values[name] not in allowed for name, allowed in choices):
        return None
    return SimpleNamespace(command=argv[0], func=func, **values)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = plain_args(argv) or build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (| head); nothing left to tell it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        print(f"kvmhook: {err.strerror or err}{where}", file=sys.stderr)
    except Exception as err:
        store = sys.modules.get(f"{__package__}.store")  # imported only by what writes
        if not isinstance(err, (UsageError, *((store.StoreError,) if store else ()))):
            raise
        print(f"kvmhook: {err}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
