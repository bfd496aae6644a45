"""Finding libvirt domain configs and reading them without trusting them."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

# A libvirt domain is a few KiB; anything far larger is not one and is not parsed.
MAX_SIZE = 16 * 1024 * 1024

SYSTEM_FOLDER = "etc/libvirt/qemu"
SESSION_FOLDER = ".config/libvirt/qemu"

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class Emulator:
    index: int
    text: str
    line: int | None


@dataclass(frozen=True)
class Domain:
    name: str | None
    uuid: str | None
    type: str | None
    arch: str | None
    emulators: tuple[Emulator, ...]
    line: int | None


@dataclass(frozen=True)
class Config:
    """One entry named *.xml in a config folder.

    entry is "file" for a regular file, else what it is ("symlink", "fifo", ...).
    problem_kind/problem say why a file was not read or parsed as a domain.
    data holds the bytes the ebuild's grep would read (for a symlink, its target's).
    """

    path: str
    entry: str
    data: bytes | None = None
    domain: Domain | None = None
    problem_kind: str | None = None
    problem: str | None = None
    mention_lines: tuple[int, ...] | None = None  # only for files too large to hold

    @property
    def globbed(self) -> bool:
        """Whether the qemu ebuild's *.xml glob sees it; libvirt also loads hidden ones."""
        return not os.path.basename(self.path).startswith(".")


def config_folders(root: str, session: bool) -> list[str]:
    """The config folders below root that exist, system folder first."""
    found = []
    system = os.path.join(root, SYSTEM_FOLDER)
    if os.path.isdir(system):
        found.append(system)
    if session:
        homes = [os.path.join(root, "root")]
        home_base = os.path.join(root, "home")
        if os.path.isdir(home_base):
            homes += sorted(e.path for e in os.scandir(home_base) if e.is_dir())
        for home in homes:
            folder = os.path.join(home, SESSION_FOLDER)
            if os.path.isdir(folder) and not _links_below(home, folder):
                found.append(folder)
    return found


def _links_below(base: str, folder: str) -> bool:
    # A user owns everything below their home: never follow their links as root.
    path = base
    for part in os.path.relpath(folder, base).split(os.sep):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return True
    return False


def discover(folders: list[str]) -> Iterator[Config]:
    """Every top-level *.xml entry of each folder, read safely and parsed."""
    for folder in folders:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".xml"))
        for name in names:
            yield read_config(os.path.join(folder, name))


def _entry_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def read_config(path: str) -> Config:
    try:
        st = os.lstat(path)
    except OSError as err:
        return Config(path, "file", problem_kind="unreadable", problem=_oserror(err))
    kind = _entry_kind(st.st_mode)
    if kind == "symlink":
        data, lines = None, None
        # Opening a device can have side effects (a tape rewinds): open regular targets only.
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.stat(path).st_mode):
                data, lines, _ = _read_regular(path, follow=True)
        return Config(path, kind, data=data, mention_lines=lines)
    if kind != "file":
        return Config(path, kind)
    try:
        data, lines, st = _read_regular(path, follow=False)
    except OSError as err:
        return Config(path, kind, problem_kind="unreadable", problem=_oserror(err))
    if st is None:
        # Swapped for something else since the folder was listed.
        return Config(path, "device")
    if data is None:
        return Config(
            path,
            kind,
            problem_kind="unparsable",
            problem=f"larger than {MAX_SIZE // (1024 * 1024)} MiB, not a domain config",
            mention_lines=lines,
        )
    domain, problem_kind, problem = parse(data)
    return Config(path, kind, data, domain, problem_kind, problem)


def _read_regular(
    path: str, follow: bool
) -> tuple[bytes | None, tuple[int, ...] | None, os.stat_result | None]:
    """(bytes, None, stat) of a regular file; (None, mention lines, stat) when too large.

    (None, None, None) when the path is not a regular file. O_NONBLOCK keeps a
    FIFO that replaced the file from blocking the open; fstat then rejects it.
    """
    flags = _OPEN_FLAGS if follow else _OPEN_FLAGS | os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, None, None
        if st.st_size > MAX_SIZE:
            return None, _scan_mentions(fd), st
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_SIZE:
                return None, _scan_mentions(fd), st
        return b"".join(chunks), None, st
    finally:
        os.close(fd)


NEEDLE = b"/usr/bin/qemu-kvm"


def mention_lines(data: bytes) -> tuple[int, ...]:
    """Line numbers where the qemu ebuild's grep for /usr/bin/qemu-kvm matches."""
    lines = []
    start = data.find(NEEDLE)
    line, counted = 1, 0
    while start != -1:
        line += data.count(b"\n", counted, start)
        counted = start
        if not lines or lines[-1] != line:
            lines.append(line)
        start = data.find(NEEDLE, start + 1)
    return tuple(lines)


def _scan_mentions(fd: int) -> tuple[int, ...]:
    os.lseek(fd, 0, os.SEEK_SET)
    found: list[int] = []
    line, tail = 1, b""
    while chunk := os.read(fd, 1 << 20):
        block = tail + chunk
        for n in mention_lines(block):
            absolute = line + n - 1
            if not found or found[-1] < absolute:
                found.append(absolute)
        # Keep a tail short enough that no match is counted twice on a new line.
        keep = len(NEEDLE) - 1
        tail = block[-keep:]
        line += block.count(b"\n", 0, len(block) - keep)
    return tuple(found)


def _oserror(err: OSError) -> str:
    return err.strerror or str(err)


def xml_parser():
    """lxml parser that never resolves entities, loads a DTD or touches the network."""
    from lxml import etree

    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=False,
        remove_comments=False,
        remove_pis=False,
        strip_cdata=False,
    )


def parse_tree(data: bytes):
    """Parse untrusted bytes; raises ValueError with the reason when unusable."""
    from lxml import etree

    if not data.strip():
        raise ValueError("empty file")
    try:
        root = etree.fromstring(data, xml_parser())
    except etree.XMLSyntaxError as err:
        raise ValueError(f"not well-formed XML: {err.msg}") from None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None:
        names = [e.name for e in dtd.iterentities()]
        if names:
            raise ValueError(f"declares entities ({', '.join(names[:5])}); they are never expanded")
    return root


def parse(data: bytes) -> tuple[Domain | None, str | None, str | None]:
    """(domain, problem_kind, problem) for a file's bytes."""
    try:
        root = parse_tree(data)
    except ValueError as err:
        return None, "unparsable", str(err)
    if root.tag != "domain":
        tag = root.tag if isinstance(root.tag, str) else "?"
        return None, "not-a-domain", f"root element is <{tag}>, not <domain>"
    os_type = root.find("os/type")
    emulators = tuple(
        Emulator(i, "".join(el.itertext()), el.sourceline)
        for i, el in enumerate(root.findall("devices/emulator"))
    )
    return (
        Domain(
            name=_text(root.findtext("name")),
            uuid=_text(root.findtext("uuid")),
            type=root.get("type"),
            arch=os_type.get("arch") if os_type is not None else None,
            emulators=emulators,
            line=root.sourceline,
        ),
        None,
        None,
    )


def _text(value: str | None) -> str | None:
    return value.strip() if value is not None else None
