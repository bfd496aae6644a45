"""Command line: kvmhook check | fix | undo | hook. It parses arguments and renders
kvmhook.api results; the work is in the API."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

from . import __version__, api, report

TYPE_CHECKING = False  # typing itself costs 3 ms
if TYPE_CHECKING:  # argparse costs some 10 ms at start: plain check and hook go without it
    import argparse

EXIT_OK, EXIT_FINDINGS, EXIT_FAILED = 0, 1, 2


def _emit(args: argparse.Namespace, result: api.Result) -> int:
    if args.json:
        sys.stdout.write(report.result_json(result))
    else:
        sys.stdout.write(report.result_text(result, report.use_colour(sys.stdout)))
    return EXIT_FINDINGS if result.has_errors else EXIT_OK


def _scanning(args: argparse.Namespace) -> dict:
    """The options every scanning command passes to the API."""
    return dict(
        session=args.session,
        targets=args.targets,
        qemu_version=args.qemu_version,
        installed_version=args.installed_version,
        connect=args.connect,
    )


def cmd_check(args: argparse.Namespace) -> int:
    return _emit(args, api.check(args.root, **_scanning(args)))


def cmd_fix(args: argparse.Namespace) -> int:
    result = api.fix(
        args.root,
        keep_type=args.keep_type,
        machines=args.machines,
        dry_run=args.dry_run,
        **_scanning(args),
    )
    return _emit(args, result)


def cmd_undo(args: argparse.Namespace) -> int:
    if args.list:
        return _list_runs(args)
    return _emit(args, api.undo(args.root, run=args.run, connect=args.connect))


def _list_runs(args: argparse.Namespace) -> int:
    found = api.runs(args.root)
    if args.json:
        root = os.path.abspath(args.root)
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
    try:
        result = api.hook(args.root, mode=args.mode, machines=args.machines, **_scanning(args))
    except api.KvmhookError as err:
        if not (err.intact and args.mode == "fix"):
            raise
        print("\n".join(report.for_portage(line) for line in report.portage_failure(str(err))))
        return HOOK_STOP
    print("\n".join(report.for_portage(line) for line in report.portage_lines(result)))
    return HOOK_STOP if result.stop else EXIT_OK


def cmd_install_hook(args: argparse.Namespace) -> int:
    """Wire the snippet, then run it once as portage would: the exit status says whether
    the hook is wired and kvmhook answers, not whether configs are stale."""
    from . import hook

    root = api.root_folder(args.root)
    try:
        path, changed = hook.install(root)
    except hook.HookError as err:
        raise api.KvmhookError(f"install-hook: {err}") from None
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

    path, changed = hook.uninstall(api.root_folder(args.root))
    print(f"{'Removed the kvmhook line from' if changed else 'No kvmhook line in'} {path}")
    return EXIT_OK


def cmd_hook_path(args: argparse.Namespace) -> int:
    from . import hook

    print(hook.snippet_path(api.root_folder(args.root)))
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
    except api.KvmhookError as err:
        print(f"kvmhook: {err}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
