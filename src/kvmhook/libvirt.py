"""Talking to a running libvirt daemon: through libvirt-python when importable, else virsh.

A daemon keeps its own copy of every domain definition and writes it back over
the file at the next --config change, so a fix it does not hold gets lost.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import namedtuple

# Heavier modules (socket, subprocess, lxml, libvirt itself) are imported where a daemon
# is actually reached, to keep a check with no daemon quick to start.

VIRSH_TIMEOUT = 60
RELOAD_WAIT = 10.0


class DaemonError(Exception):
    """The daemon refused or failed; the text is libvirt's reason."""


class Held(namedtuple("Held", "name uuid active type emulators machine", defaults=(None,))):
    """What the daemon holds of one domain: its inactive (persistent) definition."""

    __slots__ = ()


def held_from_xml(xml: str, active: bool) -> Held:
    from .domains import parse

    domain, _, problem = parse(xml.encode())
    if domain is None:
        raise DaemonError(f"the daemon's XML does not parse: {problem}")
    return Held(
        name=domain.name or "",
        uuid=(domain.uuid or "").lower(),
        active=active,
        type=domain.type,
        emulators=tuple(e.text.strip() for e in domain.emulators),
        machine=domain.machine,
    )


class Library:
    """libvirt-python."""

    via = "libvirt-python"

    def __init__(self, module, uri: str):
        self._libvirt = module
        module.registerErrorHandler(lambda *_: None, None)  # no stray lines on stderr
        try:
            self._conn = module.open(uri)
        except module.libvirtError as err:
            raise DaemonError(err.get_error_message()) from None

    def _domain(self, uuid: str):
        try:
            return self._conn.lookupByUUIDString(uuid)
        except self._libvirt.libvirtError:
            return None

    def held(self, uuid: str) -> Held | None:
        dom = self._domain(uuid)
        if dom is None:
            return None
        try:
            xml = dom.XMLDesc(self._libvirt.VIR_DOMAIN_XML_INACTIVE)
            return held_from_xml(xml, bool(dom.isActive()))
        except self._libvirt.libvirtError as err:
            raise DaemonError(err.get_error_message()) from None

    def all_held(self) -> list[Held]:
        try:
            domains = self._conn.listAllDomains()
        except self._libvirt.libvirtError as err:
            raise DaemonError(err.get_error_message()) from None
        return [h for h in (self.held(d.UUIDString()) for d in domains) if h is not None]

    def define(self, xml: str) -> None:
        try:
            self._conn.defineXML(xml)
        except self._libvirt.libvirtError as err:
            raise DaemonError(err.get_error_message()) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort; the process ends soon after
            self._conn.close()


class Virsh:
    """The virsh command, for hosts without libvirt-python."""

    via = "virsh"

    def __init__(self, virsh: str, uri: str):
        self._virsh, self._uri = virsh, uri
        self._run("uri")

    def _run(self, *args: str) -> str:
        import subprocess

        try:
            proc = subprocess.run(
                [self._virsh, "-q", "-c", self._uri, *args],
                capture_output=True,
                text=True,
                timeout=VIRSH_TIMEOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "LC_ALL": "C"},
            )
        except subprocess.TimeoutExpired:
            raise DaemonError(f"virsh {args[0]} did not answer in {VIRSH_TIMEOUT} s") from None
        if proc.returncode != 0:
            reason = proc.stderr.strip().removeprefix("error: ").splitlines()
            raise DaemonError(reason[-1] if reason else f"virsh {args[0]} failed")
        return proc.stdout

    def held(self, uuid: str) -> Held | None:
        try:
            state = self._run("domstate", uuid).strip()
        except DaemonError:
            return None
        return held_from_xml(self._run("dumpxml", "--inactive", uuid), state != "shut off")

    def all_held(self) -> list[Held]:
        uuids = self._run("list", "--all", "--uuid").split()
        return [h for h in (self.held(u) for u in uuids) if h is not None]

    def define(self, xml: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kvmhook-") as tmp:
            path = os.path.join(tmp, "domain.xml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(xml)
            self._run("define", path)

    def close(self) -> None:
        pass


def default_uri(root: str, session: bool) -> str | None:
    """The daemon to talk to when none is named, or None when there is none to reach."""
    if os.environ.get("LIBVIRT_DEFAULT_URI"):
        return os.environ["LIBVIRT_DEFAULT_URI"]
    if os.path.realpath(root) == "/" and any(os.path.exists(p) for p in _system_sockets()):
        return "qemu:///system"
    if session and os.path.realpath(root) == "/" and _session_socket():
        return "qemu:///session"
    return None


def _system_sockets() -> list[str]:
    return ["/run/libvirt/virtqemud-sock", "/run/libvirt/libvirt-sock"]


def _session_socket() -> str | None:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or os.path.expanduser("~/.cache")
    for name in ("virtqemud-sock", "libvirt-sock"):
        path = os.path.join(runtime, "libvirt", name)
        if os.path.exists(path):
            return path
    return None


def socket_path(uri: str) -> str | None:
    """The local socket a URI reaches, or None (remote, or unknown)."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(uri)
    if parts.hostname or (parts.scheme not in ("qemu", "qemu+unix")):
        return None
    given = parse_qs(parts.query).get("socket")
    if given:
        return given[0]
    if parts.path == "/system":
        return next((p for p in _system_sockets() if os.path.exists(p)), None)
    if parts.path == "/session":
        return _session_socket()
    return None


def peer(uri: str) -> tuple[int, int] | None:
    """(pid, uid) of the local daemon behind a URI, from its socket's peer credentials."""
    import socket
    import struct

    path = socket_path(uri)
    if path is None:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(path)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
    pid, uid, _ = struct.unpack("3i", creds)
    return (pid, uid) if pid else None


def daemon_pid(uri: str) -> int | None:
    found = peer(uri)
    return found[0] if found else None


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read(1 << 20)
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in pairs}


def daemon_folder(uri: str) -> tuple[tuple[int, int] | None, str]:
    """The (device, inode) of the folder from which the local daemon behind uri loads its
    domain configs, and where that is; None (and why) when that cannot be told.

    A system daemon (root) loads /etc/libvirt/qemu, a session daemon its config home's
    libvirt/qemu, as seen from the daemon's own root. The folder must belong to the
    daemon's user: a user's daemon never speaks for the system folder.
    """
    import pwd

    path = socket_path(uri)
    if path is None:
        return None, "not a local daemon whose process can be asked"
    found = peer(uri)
    if found is None:
        raise DaemonError(f"nothing answers on {path}")
    pid, uid = found
    if uid == 0:
        rel = "etc/libvirt/qemu"
    else:
        env = _environ(pid)
        home = env.get("HOME")
        if not home:
            try:
                home = pwd.getpwuid(uid).pw_dir
            except KeyError:
                return None, f"its user (uid {uid}) has no home"
        config = env.get("XDG_CONFIG_HOME", "")
        config = config if config.startswith("/") else os.path.join(home, ".config")
        rel = os.path.join(config, "libvirt/qemu").lstrip("/")
    where = "/" + rel
    try:
        st = os.stat(os.path.join(f"/proc/{pid}/root", rel))
    except OSError as err:
        return None, f"its config folder {where} cannot be seen ({err.strerror})"
    if st.st_uid != uid:
        return None, f"its config folder {where} does not belong to the daemon's user"
    return (st.st_dev, st.st_ino), where


def connect(uri: str):
    """A connection through libvirt-python, else virsh; raises DaemonError with why not."""
    import importlib
    import shutil

    try:
        module = importlib.import_module("libvirt")
    except ImportError:
        module = None
    if module is not None:
        return Library(module, uri)
    virsh = shutil.which("virsh")
    if virsh is None:
        raise DaemonError("neither libvirt-python nor virsh is installed")
    return Virsh(virsh, uri)


def reload(uri: str) -> bool:
    """Ask the daemon to re-read its config files (SIGHUP); False when it cannot be asked."""
    import signal

    pid = daemon_pid(uri)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        return False
    return True


def _same(held: Held, want: Held) -> bool:
    """Whether the daemon holds want's emulators, type and machine type; an alias such as
    'pc' is expanded by libvirt, so only a versioned machine type is compared."""
    from .qemu import family

    machine_ok = want.machine is None or not family(want.machine) or held.machine == want.machine
    return machine_ok and (held.emulators, held.type) == (want.emulators, want.type)


def wait_for(conn, uuid: str, want: Held) -> bool:
    """Whether the daemon comes to hold want's emulators and type (a reload takes a moment)."""
    deadline = time.monotonic() + RELOAD_WAIT
    while True:
        try:
            held = conn.held(uuid)
        except DaemonError:
            held = None
        if held is not None and _same(held, want):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


class Synced(namedtuple("Synced", "path domain how active note")):
    """How a daemon was brought in line with one file: how is "defined", "reloaded"
    or "not-updated"; active says the domain was running."""

    __slots__ = ()

    @property
    def verified(self) -> bool:
        return self.how != "not-updated"

    def as_json(self) -> dict:
        return {
            "file": self.path,
            "domain": self.domain,
            "how": self.how,
            "verified": self.verified,
            "running": self.active,
            "note": self.note,
        }


def sync(conn, uri: str, path: str, data: bytes) -> Synced | None:
    """Make the daemon hold the definition in data, which is already on disk at path.

    Defining through libvirt comes first; when libvirt refuses (a binary not yet
    installed, a virt type it lacks), the daemon re-reads its files on SIGHUP.
    None when the daemon does not know this domain (by UUID and name).
    """
    from lxml import etree

    from .edit import parse_tree

    # Re-serialised as text: libvirt takes a string, whatever the file's encoding.
    xml = etree.tostring(parse_tree(data), encoding="unicode")
    want = held_from_xml(xml, False)
    try:
        held = conn.held(want.uuid) if want.uuid else None
    except DaemonError:
        held = None
    if held is None or held.name != want.name:
        return None
    try:
        conn.define(xml)
        refused = None
    except DaemonError as err:
        refused = str(err)
    if refused is None and wait_for(conn, want.uuid, want):
        return Synced(path, want.name, "defined", held.active, "")
    if reload(uri) and wait_for(conn, want.uuid, want):
        why = f"libvirt refused the definition ({refused}); " if refused else ""
        return Synced(
            path, want.name, "reloaded", held.active, f"{why}the daemon re-read its files"
        )
    why = f"libvirt refused the definition ({refused})" if refused else "libvirt did not take it"
    return Synced(
        path,
        want.name,
        "not-updated",
        held.active,
        f"{why} and the daemon could not be made to re-read its files: after the merge run"
        f" 'virsh -c {uri} define {path}', or restart the daemon, before any other change"
        " to this domain",
    )


class Daemon(namedtuple("Daemon", "uri reached via note")):
    """What became of the daemon link: its URI (or None), whether it was reached, through
    what ("libvirt-python" or "virsh"), and one line about it."""

    __slots__ = ()

    def as_json(self) -> dict:
        return {"uri": self.uri, "reached": self.reached, "via": self.via, "note": self.note}


class Link:
    """A reached daemon, or why none was: what fix, undo and check say about it.

    folder is the (device, inode) of the config folder it loads: it is told only about
    files in that folder.
    """

    def __init__(
        self,
        uri: str | None,
        conn: object | None,
        note: str,
        folder: tuple[int, int] | None = None,
    ):
        self.uri, self.conn, self.note, self.folder = uri, conn, note, folder

    def held(self) -> dict[str, Held] | None:
        if self.conn is None:
            return None
        try:
            return {h.uuid: h for h in self.conn.all_held()}
        except DaemonError as err:
            self.conn, self.note = None, f"no libvirt daemon reached at {self.uri}: {err}"
            return None

    def owns(self, identity: tuple[int, int] | None) -> bool:
        """Whether a file in the folder with this identity belongs to this daemon."""
        return self.conn is not None and identity is not None and identity == self.folder

    def state(self) -> Daemon:
        via = getattr(self.conn, "via", None)
        return Daemon(self.uri, self.conn is not None, via, self.note)

    def close(self) -> None:
        if self.conn is not None and not getattr(self, "_closed", False):
            self._closed = True
            self.conn.close()


def attach(uri: str | None, root: str, session: bool) -> Link:
    uri = uri or default_uri(root, session)
    if uri is None:
        return Link(None, None, "no libvirt daemon reached: none runs for this root (--connect)")
    try:
        folder, where = daemon_folder(uri)
    except DaemonError as err:
        return Link(uri, None, f"no libvirt daemon reached at {uri}: {err}")
    if folder is None:
        return Link(
            uri,
            None,
            f"libvirt daemon {uri} left alone: kvmhook cannot tell which config folder it"
            f" loads ({where}), and tells a daemon only about the files in its own folder",
        )
    try:
        conn = connect(uri)
    except DaemonError as err:
        return Link(uri, None, f"no libvirt daemon reached at {uri}: {err}")
    return Link(
        uri, conn, f"libvirt daemon {uri} reached through {conn.via} (configs in {where})", folder
    )
