"""Wiring the portage snippet into /etc/portage/bashrc, and finding it."""

from __future__ import annotations

import os
import shlex
from importlib import resources

from . import store

SNIPPET = "kvmhook.sh"
SYSTEM_SNIPPET = "/usr/share/kvmhook/kvmhook.sh"
BASHRC = "etc/portage/bashrc"
MARKER = "# added by kvmhook install-hook"


def snippet_path(root: str) -> str:
    """The snippet as the system under root sees it: the packaged copy, else this package's."""
    if os.path.isfile(os.path.join(root, SYSTEM_SNIPPET.lstrip("/"))):
        return SYSTEM_SNIPPET
    return str(resources.files(__package__).joinpath(SNIPPET))


def source_line(snippet: str) -> str:
    quoted = shlex.quote(snippet)
    return f"if [[ -r {quoted} ]]; then source {quoted}; fi  {MARKER}\n"


def _lines(path: str) -> list[bytes]:
    """The bashrc's lines as bytes: it may hold any bytes, and they are kept as they are."""
    try:
        with open(path, "rb") as f:
            return f.read().splitlines(keepends=True)
    except FileNotFoundError:
        return []


_MARKER = MARKER.encode()


def install(root: str) -> tuple[str, bool]:
    """(bashrc path, whether it changed): exactly one marked line sources the snippet."""
    path = os.path.join(root, BASHRC)
    lines = _lines(path)
    wanted = source_line(snippet_path(root)).encode()
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
