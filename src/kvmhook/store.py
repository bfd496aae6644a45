"""Durable writes: atomic replacement, backups with a manifest, undo and the lock.

Everything is relative to folder fds opened without following links (domains.Folder,
and the state folder here), so no path another user controls can redirect a write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .domains import Folder, read_all, untrusted, user_name
from .errors import KvmhookError

STATE_DIR = "var/lib/kvmhook"
USER_STATE_DIR = ".local/state/kvmhook"
LOCK_WAIT = 300.0
MANIFEST = "manifest.json"
MANIFEST_MAX = 64 * 1024 * 1024

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_BACKUP_NAME = re.compile(r"\d{5}\.orig")
_RUN_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z.]*")
_TEMP_NAME = re.compile(r"\..+\.kvmhook-[0-9a-f]+\.tmp")
_SHA = re.compile(r"[0-9a-f]{64}")


class StoreError(KvmhookError):
    """kvmhook could not do its job; every original is as it was."""

    def __init__(self, message: str):
        super().__init__(message, intact=True)


@dataclass(frozen=True)
class Meta:
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: tuple[tuple[str, bytes], ...]

    def as_json(self) -> dict:
        return {
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "mtime_ns": self.mtime_ns,
            "xattrs": {k: v.hex() for k, v in self.xattrs},
        }

    @classmethod
    def from_json(cls, d: object) -> Meta:
        """The metadata a manifest records; ValueError when it is not what fix writes."""
        if not isinstance(d, dict):
            raise ValueError("no metadata")
        numbers = [d.get(k) for k in ("mode", "uid", "gid", "mtime_ns")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise ValueError("metadata that is not numbers")
        if numbers[0] & ~0o777:
            raise ValueError(f"mode {numbers[0]:o} has bits beyond the permission bits")
        raw = d.get("xattrs")
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise ValueError("extended attributes that are not names and hex")
        xattrs = tuple((k, bytes.fromhex(v)) for k, v in sorted(raw.items()))
        return cls(numbers[0], numbers[1], numbers[2], numbers[3], xattrs)


@dataclass(frozen=True)
class Planned:
    """A file to replace, in its folder: the bytes it held when scanned and the bytes to write."""

    folder: Folder
    name: str
    old: bytes
    new: bytes

    @property
    def path(self) -> str:
        return os.path.join(self.folder.path, self.name)


@dataclass(frozen=True)
class UndoResult:
    run: str | None
    restored: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]  # (path, why)


@dataclass(frozen=True)
class RunEntry:
    path: str
    backup: str
    restored: bool


@dataclass(frozen=True)
class Run:
    id: str
    folder: str
    state: str
    entries: tuple[RunEntry, ...]

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "folder": self.folder,
            "state": self.state,
            "entries": [
                {"file": e.path, "backup": e.backup, "restored": e.restored} for e in self.entries
            ],
        }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _reason(err: OSError, what: str) -> str:
    return f"{what}: {err.strerror or err}"


def state_rel(root: str) -> str:
    """Where the state folder is, relative to ROOT.

    Root, and a user working on a tree of their own, keep it in ROOT/var/lib/kvmhook;
    a user working on their own folder in a system tree keeps it in their home.
    """
    euid = os.geteuid()
    if euid == 0 or os.stat(root).st_uid == euid:
        return STATE_DIR
    import pwd

    try:
        home = pwd.getpwuid(euid).pw_dir
    except KeyError:
        raise StoreError(f"uid {euid} has no home folder for kvmhook's state") from None
    return f"{home.strip('/')}/{USER_STATE_DIR}"


class State:
    """The state folder, opened from ROOT without following links and checked."""

    def __init__(self, root: str, rel: str, fd: int):
        self.root, self.rel, self.fd = root, rel, fd
        self.path = os.path.join(root, rel)
        self.backups = os.path.join(self.path, "backups")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def run_path(self, run: str) -> str:
        return os.path.join(self.backups, run)


def open_state(root: str, create: bool) -> State | None:
    """The state folder, made when create (folders 0755, itself 0700); None when it does
    not exist and create is False. Each component must be a real folder owned by root or
    the invoker that no one else can write: anything else is refused (StoreError)."""
    euid = os.geteuid()
    rel = state_rel(root)
    parts = rel.split("/")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise StoreError(_reason(err, f"cannot open {root}")) from None
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = os.path.join(root, *parts[: i + 1])
            if create:
                with contextlib.suppress(FileExistsError):  # another run may make it first
                    try:
                        os.mkdir(part, 0o700 if last else 0o755, dir_fd=fd)
                    except OSError as err:
                        if err.errno == errno.EEXIST:
                            raise FileExistsError from None
                        raise StoreError(_reason(err, f"cannot create {where}")) from None
            try:
                new = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise StoreError(f"cannot create {where}") from None
                return None
            except OSError as err:
                if err.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise StoreError(
                        f"refusing the state folder: {where} is not a real folder (a link?)"
                    ) from None
                raise StoreError(_reason(err, f"cannot open {where}")) from None
            os.close(fd)
            fd = new
            st = os.fstat(fd)
            why = untrusted(st, euid)
            if last and why is None and st.st_uid != euid:
                why = f"belongs to {user_name(st.st_uid)}"
            if why:
                raise StoreError(f"refusing the state folder: {where} {why}")
    except BaseException:
        os.close(fd)
        raise
    return State(root, rel, fd)


@contextlib.contextmanager
def lock(state: State, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Serialise fix and undo runs on one state folder."""
    path = os.path.join(state.path, "lock")
    try:
        fd = os.open(
            "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=state.fd
        )
    except OSError as err:
        raise StoreError(_reason(err, f"cannot create the lock {path}")) from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"another kvmhook run holds {path}") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def read_meta(fd: int) -> Meta:
    st = os.fstat(fd)
    try:
        names = sorted(os.listxattr(fd))
    except OSError as err:
        if err.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        names = []
    xattrs = tuple((name, os.getxattr(fd, name)) for name in names)
    return Meta(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, xattrs)


def _apply_meta(fd: int, meta: Meta, keep_mtime: bool) -> None:
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (meta.uid, meta.gid):
        os.fchown(fd, meta.uid, meta.gid)
    os.fchmod(fd, meta.mode)
    for name, value in meta.xattrs:
        os.setxattr(fd, name, value)
    if keep_mtime:
        os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))


def read_at(dir_fd: int, name: str, limit: int | None = None) -> tuple[bytes, Meta] | None:
    """A regular file's bytes and metadata, or None when it is missing or not a regular
    file (a link, a device: never opened as such)."""
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP):
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size if limit is None else min(st.st_size, limit)
        data = read_all(fd, size, limit)
        if limit is not None and len(data) > limit:
            return None
        return data, read_meta(fd)
    finally:
        os.close(fd)


def _write_new(dir_fd: int, name: str, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    fd = os.open(name, _NEW, mode, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _sync_all(fds: Sequence[int]) -> None:
    """Make everything written on the file systems of fds durable: one syncfs each."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    done = set()
    for fd in fds:
        device = os.fstat(fd).st_dev
        if device not in done:
            if syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            done.add(device)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _temp_name(name: str) -> str:
    # Hidden and not ending in .xml: neither libvirt nor the ebuild's glob picks it up.
    return f".{name}.kvmhook-{secrets.token_hex(4)}.tmp"


def _stage(
    dir_fd: int, name: str, data: bytes, meta: Meta, keep_mtime: bool, sync: bool = True
) -> str:
    """A complete copy of data beside name, with its metadata (synced unless told)."""
    temp = _temp_name(name)
    fd = os.open(temp, _NEW, 0o600, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
        _apply_meta(fd, meta, keep_mtime)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(dir_fd, temp)
        raise
    os.close(fd)
    return temp


def _replace_one(dir_fd: int, name: str, data: bytes, meta: Meta, keep_mtime: bool) -> None:
    """Atomically put data at name in the folder with meta, durably."""
    temp = _stage(dir_fd, name, data, meta, keep_mtime)
    try:
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly(dir_fd, temp)
        raise
    os.fsync(dir_fd)


def _unlink_quietly(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def _write_json(dir_fd: int, name: str, doc: dict, sync: bool = True) -> None:
    temp = name + ".tmp"
    _unlink_quietly(dir_fd, temp)
    # compact: with an indent, json uses its pure-Python encoder (a quarter second a run)
    data = (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
    _write_new(dir_fd, temp, data, sync=sync)
    os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if sync:
        os.fsync(dir_fd)


def _open_dir(dir_fd: int, name: str, create: bool = False) -> int:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
    return os.open(name, _DIR, dir_fd=dir_fd)


def _new_run(state: State) -> tuple[str, int]:
    backups = _open_dir(state.fd, "backups", create=True)
    try:
        for _ in range(100):
            # Names sort by time: undo takes the newest.
            now = time.time_ns()
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
            run = f"{stamp}.{now // 1000 % 10**6:06d}Z"
            try:
                os.mkdir(run, 0o700, dir_fd=backups)
            except FileExistsError:
                continue
            return run, os.open(run, _DIR, dir_fd=backups)
    finally:
        os.close(backups)
    raise StoreError(f"cannot create a backup folder in {state.backups}")


def replace_files(state: State, plans: list[Planned]) -> str:
    """Back up, then atomically replace every planned file; returns the backup folder.

    Backups, manifest and new files are all written first and made durable together
    (one syncfs per file system rather than an fsync per file); only then is any
    original replaced, each by a rename. A full or read-only disk therefore fails
    before any original is touched, and a crash leaves each file old or new.
    """
    run, run_fd = None, -1
    staged: list[str] = []
    metas: list[Meta] = []
    renamed = 0
    try:
        run, run_fd = _new_run(state)
        metas = _back_up(state, run_fd, plans)
        for plan, meta in zip(plans, metas, strict=True):
            staged.append(_stage(plan.folder.fd, plan.name, plan.new, meta, False, sync=False))
        _sync_all([run_fd, *(p.folder.fd for p in plans)])
        for temp, plan in zip(staged, plans, strict=True):
            _unchanged_or_fail(plan)
            os.rename(temp, plan.name, src_dir_fd=plan.folder.fd, dst_dir_fd=plan.folder.fd)
            renamed += 1
        for fd in {p.folder.fd for p in plans}:
            os.fsync(fd)
    except (OSError, StoreError) as err:
        for temp, plan in zip(staged[renamed:], plans[renamed:], strict=False):
            _unlink_quietly(plan.folder.fd, temp)
        rolled_back = _roll_back(plans[:renamed], metas)
        if rolled_back and run is not None:
            _remove_run(state, run, run_fd)
            run_fd = -1
        if run_fd >= 0:
            os.close(run_fd)
        if isinstance(err, StoreError):
            raise
        kept = state.run_path(run) if run else state.backups
        where = "" if rolled_back else f" (some files were replaced; backups in {kept})"
        raise StoreError(_reason(err, "cannot write the fixed configs") + where) from None
    with contextlib.suppress(OSError):
        # The "started" manifest already serves undo; this only records completion.
        _set_state(run_fd, "done")
    os.close(run_fd)
    return state.run_path(run)


def _back_up(state: State, run_fd: int, plans: list[Planned]) -> list[Meta]:
    entries, metas = [], []
    for i, plan in enumerate(plans):
        meta = _unchanged_or_fail(plan)
        backup = f"{i:05d}.orig"
        _write_new(run_fd, backup, plan.old, sync=False)
        entries.append(
            {
                "path": f"{plan.folder.rel}/{plan.name}",
                "backup": backup,
                "sha256": sha256(plan.old),
                "new_sha256": sha256(plan.new),
                "meta": meta.as_json(),
            }
        )
        metas.append(meta)
    manifest = {"schema": 1, "state": "started", "entries": entries}
    _write_json(run_fd, MANIFEST, manifest, sync=False)
    return metas


def stale_temps(folders: Sequence[Folder]) -> bool:
    """Whether a killed fix or undo left temporary files in a folder this run may write."""
    for folder in folders:
        if folder.writable:
            with contextlib.suppress(OSError):
                if any(_TEMP_NAME.fullmatch(e.name) for e in os.scandir(folder.fd)):
                    return True
    return False


def clean_stale_temps(folders: Sequence[Folder], state: State | None = None) -> None:
    """Remove what a killed fix or undo left: its hidden temporary files (never *.xml)."""
    for folder in folders:
        if not folder.writable:
            continue
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder.fd):
                if _TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    _unlink_quietly(folder.fd, entry.name)
    if state is not None:
        for run in _run_names(state):
            with contextlib.suppress(OSError):
                fd = _open_dir(state.fd, f"backups/{run}")
                _unlink_quietly(fd, MANIFEST + ".tmp")
                os.close(fd)


def _unchanged_or_fail(plan: Planned) -> Meta:
    current = read_at(plan.folder.fd, plan.name)
    if current is None or current[0] != plan.old:
        raise StoreError(f"{plan.path} changed while kvmhook was working; run it again")
    return current[1]


def _roll_back(done: list[Planned], metas: list[Meta]) -> bool:
    """Put back the originals already replaced; False when one could not be."""
    ok = True
    for plan, meta in zip(done, metas, strict=False):
        try:
            _replace_one(plan.folder.fd, plan.name, plan.old, meta, keep_mtime=True)
        except OSError:
            ok = False
    return ok


def note_rewrite(state: State, run_path: str, folder: Folder, name: str) -> None:
    """Record the bytes a libvirt daemon wrote over a fixed file, so that undo accepts them."""
    run = os.path.basename(run_path)
    try:
        run_fd = _open_dir(state.fd, f"backups/{run}")
    except OSError:
        return
    try:
        manifest = _manifest(run_fd)
        current = read_at(folder.fd, name)
        if manifest is None or current is None:
            return
        rel = f"{folder.rel}/{name}"
        for entry in manifest["entries"]:
            if isinstance(entry, dict) and entry.get("path") == rel:
                entry.setdefault("rewritten_sha256", []).append(sha256(current[0]))
        _write_json(run_fd, MANIFEST, manifest)
    finally:
        os.close(run_fd)


def _set_state(run_fd: int, value: str) -> None:
    manifest = _manifest(run_fd)
    if manifest is not None:
        manifest["state"] = value
        _write_json(run_fd, MANIFEST, manifest)


def _remove_run(state: State, run: str, run_fd: int) -> None:
    with contextlib.suppress(OSError):
        for name in os.listdir(run_fd):
            _unlink_quietly(run_fd, name)
    os.close(run_fd)
    with contextlib.suppress(OSError):
        backups = _open_dir(state.fd, "backups")
        try:
            os.rmdir(run, dir_fd=backups)
        finally:
            os.close(backups)


def _manifest(run_fd: int) -> dict | None:
    try:
        current = read_at(run_fd, MANIFEST, MANIFEST_MAX)
        doc = json.loads(current[0]) if current is not None else None
    except (OSError, ValueError):
        return None
    ok = isinstance(doc, dict) and doc.get("schema") == 1 and isinstance(doc.get("entries"), list)
    return doc if ok else None


def _run_names(state: State) -> list[str]:
    """Backup run folders, newest first."""
    try:
        backups = _open_dir(state.fd, "backups")
    except OSError:
        return []
    try:
        names = [e.name for e in os.scandir(backups) if _RUN_NAME.fullmatch(e.name)]
    finally:
        os.close(backups)
    return sorted(names, reverse=True)


def _open_run(state: State, run: str) -> int | None:
    if not _RUN_NAME.fullmatch(run):
        return None
    try:
        return _open_dir(state.fd, f"backups/{run}")
    except OSError:
        return None


def runs(state: State) -> list[Run]:
    """Every backup run, newest first, with what each still holds."""
    found = []
    for name in _run_names(state):
        fd = _open_run(state, name)
        if fd is None:
            continue
        try:
            manifest = _manifest(fd)
        finally:
            os.close(fd)
        if manifest is None:
            continue
        entries = tuple(
            RunEntry(
                os.path.join(state.root, str(e.get("path"))),
                os.path.join(state.run_path(name), str(e.get("backup"))),
                e.get("undone") == "restored",
            )
            for e in manifest["entries"]
            if isinstance(e, dict)
        )
        found.append(Run(name, state.run_path(name), str(manifest.get("state")), entries))
    return found


def last_run(state: State) -> str | None:
    """The newest backup run whose undo has not been tried."""
    for run in runs(state):
        if run.state != "undone":
            return run.id
    return None


def _entry_target(entry: object, folders: dict[str, Folder]) -> tuple[Folder, str]:
    """The folder and name an entry restores; ValueError with why it is refused."""
    if not isinstance(entry, dict):
        raise ValueError("the manifest entry is not an object")
    path, backup = entry.get("path"), entry.get("backup")
    if not isinstance(path, str) or not path or path.startswith("/"):
        raise ValueError("the manifest names a path that is not relative to ROOT")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError("the manifest path has empty, '.' or '..' parts")
    if not isinstance(backup, str) or not _BACKUP_NAME.fullmatch(backup):
        raise ValueError("the manifest names a backup outside its run folder")
    for key in ("sha256", "new_sha256"):
        if not isinstance(entry.get(key), str) or not _SHA.fullmatch(entry[key]):
            raise ValueError("the manifest has no valid checksums")
    folder = folders.get("/".join(parts[:-1]))
    if folder is None or not parts[-1].endswith(".xml"):
        raise ValueError("not in a config folder that kvmhook scans")
    if not folder.writable:
        raise ValueError(folder.why)
    return folder, parts[-1]


def undo(state: State, folders: Sequence[Folder], run: str | None = None) -> UndoResult:
    """Restore the files of one fix run (the newest not yet undone, or the one named),
    refusing any that changed since; the run is then done with, refusals and all."""
    if run is None:
        run = last_run(state)
        if run is None:
            return UndoResult(None, (), ())
    run_fd = _open_run(state, run)
    if run_fd is None:
        raise StoreError(f"no backup run {run!r} in {state.backups} (kvmhook undo --list)")
    try:
        manifest = _manifest(run_fd)
        if manifest is None:
            raise StoreError(f"the manifest of {state.run_path(run)} is damaged")
        by_rel = {f.rel: f for f in folders}
        restored, refused = [], []
        for entry in manifest["entries"]:
            if isinstance(entry, dict) and entry.get("undone") == "restored":
                continue
            outcome = _undo_entry(state, run, run_fd, entry, by_rel)
            if isinstance(entry, dict):
                entry["undone"] = "restored" if outcome[1] is None else "refused"
            (restored.append(outcome[0]) if outcome[1] is None else refused.append(outcome))
        manifest["state"] = "undone"
        _write_json(run_fd, MANIFEST, manifest)
    finally:
        os.close(run_fd)
    return UndoResult(state.run_path(run), tuple(restored), tuple(refused))


def _undo_entry(
    state: State, run: str, run_fd: int, entry: object, folders: dict[str, Folder]
) -> tuple[str, str | None]:
    """(path, None) when restored (or already the original), else (path, why not)."""
    raw_path = entry.get("path") if isinstance(entry, dict) else None
    path = os.path.join(state.root, raw_path) if isinstance(raw_path, str) else "(no path)"
    raw_backup = entry.get("backup") if isinstance(entry, dict) else None
    if isinstance(raw_backup, str) and _BACKUP_NAME.fullmatch(raw_backup):
        backup = os.path.join(state.run_path(run), raw_backup)
        keep = f"; its original is kept in {backup}"
    else:
        backup = state.run_path(run)
        keep = f"; its original may be among the backups in {backup}"
    try:
        folder, name = _entry_target(entry, folders)
        meta = Meta.from_json(entry.get("meta"))
    except ValueError as err:
        return path, f"{err}{keep}"
    current = read_at(folder.fd, name)
    if current is None:
        return path, f"missing or no longer a regular file since the fix{keep}"
    digest = sha256(current[0])
    if digest == entry["sha256"]:
        return path, None
    rewritten = entry.get("rewritten_sha256", ())
    if digest not in (entry["new_sha256"], *(rewritten if isinstance(rewritten, list) else ())):
        return path, f"changed since the fix run{keep}"
    original = read_at(run_fd, raw_backup, MANIFEST_MAX)
    if original is None or sha256(original[0]) != entry["sha256"]:
        return path, f"its backup {backup} is missing or damaged"
    try:
        _replace_one(folder.fd, name, original[0], meta, keep_mtime=True)
    except OSError as err:
        raise StoreError(_reason(err, f"cannot restore {path}")) from None
    return path, None


def write_atomic(path: str, data: bytes, new_mode: int = 0o644) -> None:
    """Replace (or create) one file atomically, keeping its metadata when it exists;
    a symbolic link is written through to its target, which keeps its own mode."""
    if os.path.islink(path):
        path = os.path.realpath(path)
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        current = read_at(dir_fd, name)
        fresh = Meta(new_mode, os.geteuid(), os.getegid(), 0, ())
        meta = current[1] if current is not None else fresh
        _replace_one(dir_fd, name, data, meta, keep_mtime=False)
    finally:
        os.close(dir_fd)
