"""Finding libvirt domain configs and reading them without trusting them."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections import namedtuple
from collections.abc import Iterator
from xml.parsers import expat

# A libvirt domain is a few KiB; anything far larger is not one and is not parsed.
MAX_SIZE = 16 * 1024 * 1024

SYSTEM_FOLDER = "etc/libvirt/qemu"
SESSION_FOLDER = ".config/libvirt/qemu"

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Emulator(namedtuple("Emulator", "index text line span")):
    """The index-th <devices><emulator>: its text (whitespace kept), the line of the path,
    and the byte span of the stripped path in the file, or None when the path is not written
    as plain text there (markup, comments or character references inside)."""

    __slots__ = ()


class Domain(namedtuple("Domain", "name uuid type arch emulators line type_span editable")):
    """What the rules need of a parsed domain config.

    type_span is the byte span of <domain type>'s value; editable is None, or why kvmhook
    does not edit this file's bytes (a DOCTYPE, an encoding that is not ASCII-compatible).
    """

    __slots__ = ()


class Config(
    namedtuple(
        "Config",
        "path entry data domain problem_kind problem mention_lines",
        defaults=(None, None, None, None, None),
    )
):
    """One entry named *.xml in a config folder.

    entry is "file" for a regular file, else what it is ("symlink", "fifo", ...).
    problem_kind/problem say why a file was not read or parsed as a domain.
    data holds the bytes the ebuild's grep would read (for a symlink, its target's).
    mention_lines is set only for files too large to hold.
    """

    __slots__ = ()

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
        data = read_all(fd, st.st_size, MAX_SIZE)
        if data is None:  # it grew past the limit while being read
            return None, _scan_mentions(fd), st
        return data, None, st
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


def read_all(fd: int, size_hint: int, limit: int | None = None) -> bytes | None:
    """The rest of fd; None once past limit. Reads are sized from the hint: a
    fixed large read size would leave the allocator fragmented over many files."""
    chunks, total = [], 0
    while chunk := os.read(fd, max(size_hint - total, 0) + 4096):
        chunks.append(chunk)
        total += len(chunk)
        if limit is not None and total > limit:
            return None
    return b"".join(chunks)


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


class _Refused(Exception):
    pass


_XML_SPACE = " \t\r\n"
_ATTRIBUTE = re.compile(rb"\s+([^\s=/>]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")


class _Reader:
    """Collects the facts of a domain from expat's events, with the byte offsets expat gives.

    Only the first three levels matter (domain/devices/emulator and the like), so deeper
    elements cost one call each, and text costs nothing outside the few elements read.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.parser = parser = expat.ParserCreate()
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.EntityDeclHandler = self.entity
        parser.StartDoctypeDeclHandler = self.doctype
        for name in ("CommentHandler", "ProcessingInstructionHandler", "StartCdataSectionHandler"):
            setattr(parser, name, self.markup)
        self.depth = 0
        self.names = ["", "", ""]
        self.root: tuple[str, dict, int, int] | None = None
        self.fields: dict[str, list[str]] = {"name": [], "uuid": []}
        self.field: list[str] | None = None  # the chunks of the field being read
        self.arch: str | None = None
        self.emulators: list[Emulator] = []
        self.current: dict | None = None  # the emulator being read
        self.has_doctype = False

    def start(self, name: str, attrs: dict) -> None:
        self.depth += 1
        depth = self.depth
        if depth > 3:
            if self.current is not None:
                self.current["plain"] = False
            return
        self.names[depth - 1] = name
        parser = self.parser
        if depth == 1:
            if self.root is None:
                self.root = (name, attrs, parser.CurrentLineNumber, parser.CurrentByteIndex)
        elif self.names[0] != "domain":
            return
        elif depth == 2:
            if name in self.fields:
                self.field = self.fields[name]
                parser.CharacterDataHandler = self.text
        elif self.names[1] == "os" and name == "type":
            if self.arch is None:
                self.arch = attrs.get("arch")
        elif self.names[1] == "devices" and name == "emulator":
            self.current = {
                "chunks": [],
                "start": None,
                "plain": True,
                "line": parser.CurrentLineNumber,
                "seen": False,
            }
            self.field = self.current["chunks"]
            parser.CharacterDataHandler = self.text

    def text(self, chunk: str) -> None:
        current = self.current
        if current is not None:
            if current["start"] is None:
                current["start"] = self.parser.CurrentByteIndex
            if not current["seen"] and chunk.strip(_XML_SPACE):
                # the path's own line, where the ebuild's grep finds it
                current["line"] = self.parser.CurrentLineNumber
                current["seen"] = True
        self.field.append(chunk)

    def end(self, name: str) -> None:
        depth = self.depth
        self.depth -= 1
        if depth > 3:
            return
        if self.field is not None:
            self.parser.CharacterDataHandler = None
            self.field = None
        if depth == 3 and self.current is not None:
            self.emulators.append(self._emulator(self.parser.CurrentByteIndex))
            self.current = None

    def _emulator(self, end: int) -> Emulator:
        text = "".join(self.current["chunks"])
        path = text.strip(_XML_SPACE)
        span = None
        start = self.current["start"]
        if self.current["plain"] and start is not None:
            raw = self.data[start:end]
            stripped = raw.strip(_XML_SPACE.encode())
            if path and stripped == path.encode("utf-8", "replace"):
                begin = start + raw.index(stripped)
                span = (begin, begin + len(stripped))
        return Emulator(len(self.emulators), text, self.current["line"], span)

    def markup(self, *_: object) -> None:
        if self.current is not None:
            self.current["plain"] = False

    def entity(self, name: str, *_: object) -> None:
        raise _Refused(f"declares entities ({name}); they are never expanded")

    def doctype(self, *_: object) -> None:
        self.has_doctype = True

    def type_span(self) -> tuple[int, int] | None:
        """The byte span of the value of <domain type>, from the root's start tag."""
        offset = self.root[3]
        pos = offset + len(b"<domain")
        while match := _ATTRIBUTE.match(self.data, pos):
            if match.group(1) == b"type":
                group = 2 if match.group(2) is not None else 3
                return match.span(group)
            pos = match.end()
        return None


def _encoding_problem(data: bytes) -> str | None:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        return "the file is UTF-16 or UTF-32"
    head = data[:200].lower()
    if b"encoding" in head and any(e in head for e in (b"utf-16", b"utf-32", b"ucs")):
        return "the file declares a UTF-16 or UTF-32 encoding"
    return None


def parse(data: bytes) -> tuple[Domain | None, str | None, str | None]:
    """(domain, problem_kind, problem) for a file's bytes, which are not trusted.

    expat never expands entities here (a declaration stops the parse), never loads
    a DTD and never touches the network.
    """
    if not data.strip():
        return None, "unparsable", "empty file"
    reader = _Reader(data)
    try:
        return _read(reader, data)
    finally:
        reader.parser = None  # parser <-> handlers is a cycle: free it now, not at a GC


def _read(reader: _Reader, data: bytes) -> tuple[Domain | None, str | None, str | None]:
    try:
        reader.parser.Parse(data, True)
    except _Refused as err:
        return None, "unparsable", str(err)
    except expat.ExpatError as err:
        reason = f"{expat.ErrorString(err.code)}, line {err.lineno}, column {err.offset}"
        return None, "unparsable", f"not well-formed XML: {reason}"
    name, attrs, line, _ = reader.root
    if name != "domain" or "xmlns" in attrs:
        return None, "not-a-domain", f"root element is <{name}>, not <domain>"
    problems = [_encoding_problem(data)]
    if reader.has_doctype:
        problems.append("the file has a DOCTYPE, which libvirt never writes")
    domain = Domain(
        name=_text(reader.fields["name"]),
        uuid=_text(reader.fields["uuid"]),
        type=attrs.get("type"),
        arch=reader.arch,
        emulators=tuple(reader.emulators),
        line=line,
        type_span=reader.type_span() if "type" in attrs else None,
        editable=next((p for p in problems if p), None),
    )
    return domain, None, None


def _text(chunks: list[str]) -> str | None:
    return "".join(chunks).strip() if chunks else None
