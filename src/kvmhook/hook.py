"""Wiring the portage snippet into /etc/portage/bashrc, finding it, and trying it."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from importlib import resources

from . import store
from .domains import untrusted

SNIPPET = "kvmhook.sh"
SYSTEM_SNIPPET = "/usr/share/kvmhook/kvmhook.sh"
BASHRC = "etc/portage/bashrc"
MARKER = "# added by kvmhook install-hook"
# What portage's PATH holds besides its own helpers on a plain system: no venv of the user's.
PHASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HookError(Exception):
    """The hook cannot be wired so that it runs; the text says why."""


def snippet_path(root: str) -> str:
    """The snippet as the system under root sees it: the packaged copy, else this package's."""
    if os.path.isfile(os.path.join(root, SYSTEM_SNIPPET.lstrip("/"))):
        return SYSTEM_SNIPPET
    return str(resources.files(__package__).joinpath(SNIPPET))


def source_line(snippet: str, python: str | None = None) -> str:
    """The bashrc line; python is the interpreter the hook runs kvmhook with, or None for the
    ebuild's snippet, which runs the installed kvmhook command."""
    quoted = shlex.quote(snippet)
    args = f" {shlex.quote(python)}" if python else ""
    return f"if [[ -r {quoted} ]]; then source {quoted}{args}; fi  {MARKER}\n"


def _lines(path: str) -> list[bytes]:
    """The bashrc's lines as bytes: it may hold any bytes, and they are kept as they are."""
    try:
        with open(path, "rb") as f:
            return f.read().splitlines(keepends=True)
    except FileNotFoundError:
        return []


_MARKER = MARKER.encode()


def wired_python(snippet: str) -> str | None:
    """The interpreter to wire: this installation's, unless the ebuild installed the snippet.

    Refused (HookError) when portage could not run kvmhook with it: kvmhook must import
    with Python isolated (-I, as the hook starts it), and no one but root and the invoker
    may be able to change the interpreter or the package, since root runs them.
    """
    if snippet == SYSTEM_SNIPPET:
        return None
    python = sys.executable
    if not python or not os.path.isabs(python):
        raise HookError("this Python does not know its own interpreter's path")
    euid = os.geteuid()
    package = os.path.dirname(os.path.realpath(__file__))
    for path in (os.path.realpath(python), package):
        part = path
        while True:
            st = os.stat(part)
            # a sticky folder (/tmp) lets no one replace what root owns in it
            sticky = part != path and st.st_mode & stat.S_ISVTX
            why = None if sticky else untrusted(st, euid)
            if why:
                raise HookError(
                    f"{part} {why}: root would run code that others can change;"
                    " install kvmhook where only root can write"
                )
            if part == "/":
                break
            part = os.path.dirname(part)
    proc = subprocess.run(
        [python, "-I", "-m", "kvmhook", "--version"],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": PHASE_PATH},
        timeout=60,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["it failed"])[-1]
        raise HookError(
            f"'{python} -I -m kvmhook' does not run as portage would start it ({last});"
            " install kvmhook into that Python's own site-packages (a venv, not --user)"
        )
    return python


def install(root: str) -> tuple[str, bool]:
    """(bashrc path, whether it changed): exactly one marked line sources the snippet."""
    path = os.path.join(root, BASHRC)
    lines = _lines(path)
    snippet = snippet_path(root)
    wanted = source_line(snippet, wired_python(snippet)).encode()
    marked = [line for line in lines if _MARKER in line]
    if marked == [wanted]:
        return path, False
    kept = [line for line in lines if _MARKER not in line]
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += b"\n"
    store.write_atomic(path, b"".join([*kept, wanted]))
    return path, True


def uninstall(root: str) -> tuple[str, bool]:
    path = os.path.join(root, BASHRC)
    lines = _lines(path)
    kept = [line for line in lines if _MARKER not in line]
    if len(kept) == len(lines):
        return path, False
    store.write_atomic(path, b"".join(kept))
    return path, True


_FUNCTIONS = """
eerror() { echo "eerror $*"; }
ewarn() { echo "ewarn $*"; }
elog() { echo "elog $*"; }
einfo() { echo "einfo $*"; }
die() { echo "die $*"; }
"""


def try_hook(root: str) -> tuple[bool, list[str]]:
    """Run the wired bashrc once as portage would in qemu's pretend phase (explain mode,
    nothing merged or written): (whether kvmhook answered, what the hook printed)."""
    bashrc = os.path.join(root, BASHRC)
    script = f"{_FUNCTIONS}\nsource {shlex.quote(bashrc)}\npre_pkg_pretend\n"
    env = {
        "PATH": PHASE_PATH,
        "EBUILD_PHASE": "pretend",
        "CATEGORY": "app-emulation",
        "PN": "qemu",
        "PV": "9999",
        "EROOT": root,
        "KVMHOOK_MODE": "explain",
    }
    if "KVMHOOK_PYTHON" in os.environ:
        env["KVMHOOK_PYTHON"] = os.environ["KVMHOOK_PYTHON"]
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    answered = any(line.startswith("einfo kvmhook: read the") for line in lines)
    return answered, lines
