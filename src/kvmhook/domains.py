"""Finding libvirt domain configs and reading them without trusting them.

Every folder is opened from ROOT one component at a time without following links,
and every file relative to its folder's fd: nothing another user controls can
redirect what kvmhook reads, and a user's folder is never written by anyone else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import namedtuple
from collections.abc import Callable, Iterator
from xml.parsers import expat

# A libvirt domain is a few KiB; anything far larger is not one and is not parsed.
MAX_SIZE = 16 * 1024 * 1024

SYSTEM_FOLDER = "etc/libvirt/qemu"
SESSION_FOLDER = ".config/libvirt/qemu"


class Pattern:
    """A regular expression compiled on first use: importing re costs some 6 ms at every
    start, and a check of clean configs never needs one."""

    __slots__ = ("_source", "_compiled")

    def __init__(self, source: str | bytes):
        self._source, self._compiled = source, None

    def __getattr__(self, name: str):
        if self._compiled is None:
            import re

            self._compiled = re.compile(self._source)
        return getattr(self._compiled, name)


_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_STEP = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Opens an entry without opening what it is: a device is never opened, a link not followed.
_PIN = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def untrusted(st: os.stat_result, euid: int) -> str | None:
    """Why a folder is not safe to write in, or None: someone but root and euid controls it."""
    if st.st_uid not in (0, euid):
        return f"belongs to {user_name(st.st_uid)}"
    if st.st_mode & 0o022:
        return "can be written by its group or by others"
    return None


def walk(root_fd: int, rel: str, euid: int) -> tuple[int, str | None, os.stat_result]:
    """An fd for ROOT/rel opened one component at a time with O_NOFOLLOW; why it is
    untrusted (the first component that another user owns or can write), or None; its stat.

    Raises OSError; ENOTDIR or ELOOP mean a component is not a real folder (a link).
    """
    parts = [p for p in rel.split("/") if p]
    fd, why = root_fd, None
    try:
        for i, part in enumerate(parts):
            new = os.open(part, _LIST if i == len(parts) - 1 else _STEP, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = new
            st = os.fstat(fd)
            if why is None and (reason := untrusted(st, euid)):
                why = f"{'/'.join(parts[: i + 1])} {reason}"
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    if fd == root_fd:
        fd = os.dup(root_fd)
        st = os.fstat(fd)
    return fd, why, st


class Folder:
    """A config folder opened from ROOT: fd pins it, and all access goes through fd.

    why is None when this run may write here; else why not, with the command that the
    folder's owner runs instead (kvmhook never writes where another user has a say).
    """

    __slots__ = ("path", "rel", "fd", "owner", "session", "why", "identity")

    def __init__(self, root: str, rel: str, fd: int, owner: int, session: bool, why: str | None):
        self.path = os.path.join(root, rel)
        self.rel, self.fd, self.owner, self.session, self.why = rel, fd, owner, session, why
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)

    @property
    def writable(self) -> bool:
        return self.why is None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FolderProblem(
    namedtuple("FolderProblem", "path reason severity kind", defaults=("unreadable",))
):
    """A config folder that could not be opened safely, or is missing: it becomes a finding."""

    __slots__ = ()


def _fix_command(root: str, session: bool) -> str:
    import shlex

    words = ["kvmhook", "fix"] + (["--session"] if session else [])
    if root != "/":
        words += ["--root", shlex.quote(root)]
    return " ".join(words)


def open_folder(root: str, root_fd: int, rel: str, session: bool) -> Folder | FolderProblem | None:
    """The config folder ROOT/rel, a problem when it cannot be opened safely, or None
    when it does not exist."""
    euid = os.geteuid()
    try:
        fd, why, st = walk(root_fd, rel, euid)
    except FileNotFoundError:
        return None
    except OSError as err:
        severity = "warning" if session else "error"
        path = os.path.join(root, rel)
        if err.errno in (errno.ENOTDIR, errno.ELOOP):
            return FolderProblem(
                path,
                "a component is a symbolic link or not a folder; kvmhook does not follow it",
                severity,
            )
        return FolderProblem(path, f"cannot be opened: {oserror(err)}", severity)
    if why is not None:
        me = "root" if euid == 0 else user_name(euid)
        owner = st.st_uid
        who = user_name(owner) if owner not in (0, euid) else "its owner"
        why = (
            f"{why}: kvmhook does not write there as {me}; as {who}, run:"
            f" {_fix_command(root, session)}"
        )
    return Folder(root, rel, fd, st.st_uid, session, why)


def _homes(root_fd: int, euid: int) -> list[str]:
    """ROOT/root, then ROOT/home/* sorted, as paths relative to ROOT (real folders only);
    for a user, only their own."""
    found: list[tuple[str, int]] = []
    with contextlib.suppress(OSError):
        st = os.stat("root", dir_fd=root_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            found.append(("root", st.st_uid))
    try:
        home_fd = os.open("home", _LIST, dir_fd=root_fd)
    except OSError:
        home_fd = -1
    if home_fd >= 0:
        try:
            for entry in sorted(os.scandir(home_fd), key=lambda e: e.name):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    found.append((f"home/{entry.name}", st.st_uid))
        finally:
            os.close(home_fd)
    return [rel for rel, owner in found if euid == 0 or owner == euid]


def _missing(root: str, rel: str) -> FolderProblem:
    path = os.path.join(root, rel)
    reason = f"{path} does not exist: there are no libvirt domain configs to check here"
    with contextlib.suppress(OSError):
        if any(e.name.endswith(".xml") for e in os.scandir(root)):
            reason += (
                f"; {root} holds *.xml files itself: --root takes the system's root folder"
                " (such as /), not the config folder"
            )
    return FolderProblem(path, reason, "warning", "missing-folder")


def config_folders(
    root: str, session: bool, system: bool | None = None, warn_missing: bool = False
) -> tuple[list[Folder], list[FolderProblem]]:
    """The config folders below root that exist, system folder first, each opened safely.

    As root: the system folder, and with session every user's folder too (those only
    checked). As another user: the system folder, or with session that user's own
    folder only (system=True adds the system folder). The caller closes the folders.
    """
    euid = os.geteuid()
    if system is None:
        system = euid == 0 or not session
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        rels = []
        if system:
            rels.append((SYSTEM_FOLDER, False))
        if session:
            rels += [(f"{home}/{SESSION_FOLDER}", True) for home in _homes(root_fd, euid)]
        folders, problems = [], []
        for rel, is_session in rels:
            opened = open_folder(root, root_fd, rel, is_session)
            if isinstance(opened, Folder):
                folders.append(opened)
            elif opened is not None:
                problems.append(opened)
            elif warn_missing and not is_session:
                problems.append(_missing(root, rel))
        return folders, problems
    finally:
        os.close(root_fd)


def entries(folders: list[Folder]) -> list[tuple[Folder, str, bool]]:
    """Every top-level *.xml entry of each folder, in order, and whether the folder listing
    says it is a regular file (no stat: getdents' d_type)."""
    found = []
    for folder in folders:
        names = [
            (e.name, e.is_file(follow_symlinks=False))
            for e in os.scandir(folder.fd)
            if e.name.endswith(".xml")
        ]
        found += [(folder, name, regular) for name, regular in sorted(names)]
    return found


def read_all_configs(
    found: list[tuple[Folder, str, bool]], clean: Callable[[bytes], bool] | None = None
) -> Iterator[Config]:
    for folder, name, regular in found:
        config = read_config(folder, name, clean, regular)
        if config is not None:
            yield config


class Emulator(namedtuple("Emulator", "index text line span")):
    """The index-th <devices><emulator>: its text (whitespace kept), the line of the path,
    and the byte span of the stripped path in the file, or None when the path is not written
    as plain text there (markup, comments or character references inside)."""

    __slots__ = ()


class Domain(
    namedtuple(
        "Domain",
        "name uuid type arch emulators line type_span editable machine machine_span",
        defaults=(None, None),
    )
):
    """What the rules need of a parsed domain config.

    type_span is the byte span of <domain type>'s value, machine_span that of <os><type
    machine>'s; editable is None, or why kvmhook does not edit this file's bytes (a
    DOCTYPE, an encoding that is not ASCII-compatible).
    """

    __slots__ = ()


class Config(
    namedtuple(
        "Config",
        "path entry data domain problem_kind problem mention_lines folder",
        defaults=(None, None, None, None, None, None),
    )
):
    """One entry named *.xml in a config folder.

    entry is "file" for a regular file, else what it is ("symlink", "fifo", ...).
    problem_kind/problem say why a file was not read or parsed as a domain.
    data holds the bytes the ebuild's grep would read (for a symlink, its target's).
    mention_lines is set only for files too large to hold. folder is the Folder it is in.
    """

    __slots__ = ()

    @property
    def globbed(self) -> bool:
        """Whether the qemu ebuild's *.xml glob sees it; libvirt also loads hidden ones."""
        return not os.path.basename(self.path).startswith(".")

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


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


def reopen(
    pinned: int, name: str, dir_fd: int, before: os.stat_result | None = None
) -> tuple[int, os.stat_result]:
    """A readable fd for the regular file that pinned (an O_PATH fd) refers to.

    Through /proc the very inode is opened, so a swap of the name in between changes
    nothing; without /proc the name is opened with O_NOFOLLOW and must be that inode.
    """
    try:
        fd = os.open(f"/proc/self/fd/{pinned}", _READ)
    except FileNotFoundError:
        fd = os.open(name, _READ | os.O_NOFOLLOW, dir_fd=dir_fd)
    before = before or os.fstat(pinned)
    after = os.fstat(fd)
    if (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino) or not stat.S_ISREG(
        after.st_mode
    ):
        os.close(fd)
        raise OSError(errno.EBUSY, "the file was swapped while it was opened")
    return fd, after


def read_config(
    folder: Folder, name: str, clean: Callable[[bytes], bool] | None = None, regular: bool = False
) -> Config | None:
    """The config of one entry, or None when clean() and expat prove it clean. regular says
    that the folder listing saw a regular file."""
    try:
        opened = _open_direct(folder, name) if regular and folder.writable else None
        if opened is None:
            pinned = os.open(name, _PIN, dir_fd=folder.fd)
            try:
                return _read_pinned(folder, name, os.path.join(folder.path, name), pinned, clean)
            finally:
                os.close(pinned)
        fd, st = opened
        try:
            return _from_regular(folder, name, fd, st, clean)
        finally:
            os.close(fd)
    except OSError as err:
        path = os.path.join(folder.path, name)
        return Config(path, "file", problem_kind="unreadable", problem=oserror(err), folder=folder)
    except Exception as err:  # one bad file is one finding, never the end of the run
        path = os.path.join(folder.path, name)
        return Config(path, "file", problem_kind="unparsable", problem=_crash(err), folder=folder)


def _open_direct(folder: Folder, name: str) -> tuple[int, os.stat_result] | None:
    """A regular file in a folder that only root or the invoker can change, opened directly:
    no one else can swap the entry between the listing and the open (O_NOFOLLOW and
    O_NONBLOCK cover root's own links and FIFOs). None when it is not a regular file after
    all, or cannot be opened so: the pinned path decides."""
    try:
        fd = os.open(name, _READ | os.O_NOFOLLOW, dir_fd=folder.fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if stat.S_ISREG(st.st_mode):
        return fd, st
    os.close(fd)
    return None


def _read_pinned(
    folder: Folder, name: str, path: str, pinned: int, clean: Callable[[bytes], bool] | None
) -> Config | None:
    st = os.fstat(pinned)
    kind = _entry_kind(st.st_mode)
    if kind == "symlink":
        data, lines = None, None
        if folder.writable:
            # The ebuild's grep follows links in the system folder; only root made them.
            # O_PATH opens no device: only a regular target is read.
            try:
                target = os.open(name, os.O_PATH | os.O_CLOEXEC, dir_fd=folder.fd)
            except OSError:
                target = -1
            if target >= 0:
                try:
                    target_st = os.fstat(target)
                    if stat.S_ISREG(target_st.st_mode):
                        fd, st = reopen(target, name, folder.fd, target_st)
                        try:
                            data, lines = _read_capped(fd, st.st_size)
                        finally:
                            os.close(fd)
                except OSError:
                    data, lines = None, None
                finally:
                    os.close(target)
        return Config(path, kind, data=data, mention_lines=lines, folder=folder)
    if kind != "file":
        return Config(path, kind, folder=folder)
    if not folder.writable and st.st_uid != folder.owner:
        # A hard link to a file that is not the folder owner's (a root-only file) is not read.
        return Config(
            path,
            kind,
            problem_kind="unreadable",
            problem=f"owned by {user_name(st.st_uid)}, not by the folder's owner: not read",
            folder=folder,
        )
    fd, st = reopen(pinned, name, folder.fd, st)
    try:
        return _from_regular(folder, name, fd, st, clean)
    finally:
        os.close(fd)


def _from_regular(
    folder: Folder, name: str, fd: int, st: os.stat_result, clean: Callable[[bytes], bool] | None
) -> Config | None:
    """The config in the regular file open at fd, or None when its bytes prove it clean."""
    data, lines = _read_capped(fd, st.st_size)
    if lines is None and clean is not None and clean(data) and plain_domain(data):
        return None
    path = os.path.join(folder.path, name)
    if lines is not None:
        return Config(
            path,
            "file",
            problem_kind="unparsable",
            problem=f"larger than {MAX_SIZE // (1024 * 1024)} MiB, not a domain config"
            f" (only its first {MAX_SIZE // (1024 * 1024)} MiB were read)",
            mention_lines=lines,
            folder=folder,
        )
    domain, problem_kind, problem = parse(data)
    return Config(path, "file", data, domain, problem_kind, problem, folder=folder)


def plain_domain(data: bytes) -> bool:
    """Whether data is well-formed XML whose root is <domain> (no namespace), with no DOCTYPE
    or entity declaration. expat runs in C: one callback, for the root, which removes itself."""
    parser = expat.ParserCreate()
    root: list[bool] = []

    def first(name: str, attrs: dict) -> None:
        root.append(name == "domain" and "xmlns" not in attrs)
        parser.StartElementHandler = None

    def refuse(*_: object) -> None:
        raise _Refused("a declaration")

    parser.StartElementHandler = first
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except Exception:  # anything odd: the full parse decides, and names it
        return False
    finally:
        parser.StartElementHandler = parser.StartDoctypeDeclHandler = None
        parser.EntityDeclHandler = None
    return root == [True]


def _read_capped(fd: int, size: int) -> tuple[bytes | None, tuple[int, ...] | None]:
    """(bytes, None) of a file up to MAX_SIZE; (None, mention lines in its first MAX_SIZE
    bytes) for a larger one. Never reads past the cap, whatever st_size (size) claims."""
    data = read_all(fd, min(size, MAX_SIZE), MAX_SIZE)
    if len(data) > MAX_SIZE:
        return None, mention_lines(data[:MAX_SIZE])
    return data, None


def _crash(err: Exception) -> str:
    return f"kvmhook could not handle it ({type(err).__name__}: {err})"


SAVE_FOLDER = "var/lib/libvirt/qemu/save"
SNAPSHOT_FOLDER = "var/lib/libvirt/qemu/snapshot"
_MEMORY = Pattern(rb"<memory\s[^>]*snapshot\s*=\s*['\"](internal|external)['\"]")
_RUNNING = Pattern(rb"<state>\s*(running|paused|pmsuspended)\s*</state>")


def saved_states(root: str) -> dict[str, tuple[str, ...]]:
    """Domain name -> the saved states QEMU would have to restore: managed-save images
    (SAVE_FOLDER/NAME.save) and snapshots with memory (SNAPSHOT_FOLDER/NAME/*.xml)."""
    found: dict[str, list[str]] = {}
    euid = os.geteuid()
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        with contextlib.suppress(OSError):
            fd, _, _ = walk(root_fd, SAVE_FOLDER, euid)
            try:
                for entry in os.scandir(fd):
                    if entry.name.endswith(".save") and entry.is_file(follow_symlinks=False):
                        path = os.path.join(root, SAVE_FOLDER, entry.name)
                        found.setdefault(entry.name[: -len(".save")], []).append(path)
            finally:
                os.close(fd)
        with contextlib.suppress(OSError):
            fd, _, _ = walk(root_fd, SNAPSHOT_FOLDER, euid)
            try:
                names = [e.name for e in os.scandir(fd) if e.is_dir(follow_symlinks=False)]
                for name in sorted(names):
                    for path in _memory_snapshots(root, fd, name):
                        found.setdefault(name, []).append(path)
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return {name: tuple(paths) for name, paths in found.items()}


def _memory_snapshots(root: str, parent: int, name: str) -> list[str]:
    found = []
    try:
        folder = os.open(name, _LIST, dir_fd=parent)
    except OSError:
        return []
    try:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.name.endswith(".xml") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                fd = os.open(entry.name, _READ | os.O_NOFOLLOW, dir_fd=folder)
            except OSError:
                continue
            try:
                data = read_all(fd, 65536, 1 << 20)[: 1 << 20]
            finally:
                os.close(fd)
            # memory saved with the snapshot, or (older libvirt) taken of a running guest
            if _MEMORY.search(data) or (b"<memory" not in data and _RUNNING.search(data)):
                found.append(os.path.join(root, SNAPSHOT_FOLDER, name, entry.name))
    finally:
        os.close(folder)
    return found


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


def read_all(fd: int, size_hint: int, limit: int | None = None) -> bytes:
    """The rest of fd, or with limit at most limit + 1 bytes (more than limit: too large).
    Reads are sized from the hint: a fixed large read size would leave the allocator
    fragmented over many files."""
    chunks, total = [], 0
    while True:
        want = max(size_hint - total, 0) + 4096
        if limit is not None:
            want = min(want, limit + 1 - total)
            if want <= 0:
                break
        chunk = os.read(fd, want)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total == size_hint and len(chunk) < want:
            break  # a short read of exactly the size fstat gave: the end, without one more read
    return b"".join(chunks)


def oserror(err: OSError) -> str:
    return err.strerror or str(err)


class _Refused(Exception):
    pass


_XML_SPACE = " \t\r\n"
_XML_WHITE = frozenset(b" \t\r\n")
_NAME_END = frozenset(b" \t\r\n=/>")


def attribute_span(data: bytes, pos: int, name: bytes) -> tuple[int, int] | None:
    """The byte span of attribute name's value among the attributes from pos on, or None.
    A scan by hand: importing re costs some 6 ms at start."""
    size = len(data)
    while True:
        start = pos
        while pos < size and data[pos] in _XML_WHITE:
            pos += 1
        if pos == start:
            return None
        begin = pos
        while pos < size and data[pos] not in _NAME_END:
            pos += 1
        found = data[begin:pos]
        while pos < size and data[pos] in _XML_WHITE:
            pos += 1
        if not found or pos >= size or data[pos] != 0x3D:  # =
            return None
        pos += 1
        while pos < size and data[pos] in _XML_WHITE:
            pos += 1
        if pos >= size or data[pos] not in (0x22, 0x27):  # " or '
            return None
        end = data.find(data[pos : pos + 1], pos + 1)
        if end == -1:
            return None
        if found == name:
            return pos + 1, end
        pos = end + 1


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
        self.machine: str | None = None
        self.os_type: int | None = None  # where <os><type> starts
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
            if self.os_type is None:
                self.os_type = parser.CurrentByteIndex
                self.arch = attrs.get("arch")
                self.machine = attrs.get("machine")
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
        return self.attribute_span(self.root[3] + len(b"<domain"), b"type")

    def attribute_span(self, pos: int, name: bytes) -> tuple[int, int] | None:
        """The byte span of attribute name's value in the start tag whose attributes
        begin at pos (expat has read the tag: attributes are name = 'value' or "value",
        apart by XML white space)."""
        return attribute_span(self.data, pos, name)


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
    except (ValueError, LookupError, UnicodeError) as err:
        # pyexpat reads UTF-8, UTF-16, Latin-1 and ASCII; other declared encodings end here
        return None, "unparsable", f"declares an encoding kvmhook cannot read ({err})"
    except RecursionError:
        return None, "unparsable", "nested too deeply to read"
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
        machine=reader.machine,
        machine_span=reader.attribute_span(reader.os_type + len(b"<type"), b"machine")
        if reader.machine is not None
        else None,
    )
    return domain, None, None


def _text(chunks: list[str]) -> str | None:
    return "".join(chunks).strip() if chunks else None
