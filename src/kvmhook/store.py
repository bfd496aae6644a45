"""Durable writes: atomic replacement, backups with a manifest, undo and the lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .domains import read_all

STATE_DIR = "var/lib/kvmhook"
LOCK_WAIT = 300.0


class StoreError(Exception):
    """kvmhook could not do its job; every original is as it was."""


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
    def from_json(cls, d: dict) -> Meta:
        xattrs = tuple((k, bytes.fromhex(v)) for k, v in sorted(d["xattrs"].items()))
        return cls(d["mode"], d["uid"], d["gid"], d["mtime_ns"], xattrs)


@dataclass(frozen=True)
class Planned:
    """A file to replace: the bytes it held when scanned and the bytes to write."""

    path: str
    old: bytes
    new: bytes


@dataclass(frozen=True)
class UndoResult:
    run: str | None
    restored: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]  # (path, why)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _reason(err: OSError, what: str) -> str:
    return f"{what}: {err.strerror or err}"


def state_dir(root: str) -> str:
    return os.path.join(root, STATE_DIR)


def backups_dir(root: str) -> str:
    return os.path.join(state_dir(root), "backups")


def _private_dirs(path: str) -> None:
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.mkdir(folder, 0o700)
        os.chmod(folder, 0o700)


@contextlib.contextmanager
def lock(root: str, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Serialise fix and undo runs on one ROOT."""
    path = os.path.join(state_dir(root), "lock")
    try:
        _private_dirs(state_dir(root))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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


def _read_current(path: str) -> tuple[bytes, Meta] | None:
    """The file's bytes and metadata, or None when it is missing or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP):
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return read_all(fd, st.st_size), read_meta(fd)
    finally:
        os.close(fd)


def _write_new(path: str, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _sync_all(paths: list[str]) -> None:
    """Make every path durable: one syncfs per file system, else an fsync per file."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        syncfs = None
    done = set()
    for path in paths:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            device = os.fstat(fd).st_dev
            if syncfs is None:
                os.fsync(fd)
            elif device not in done:
                if syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), path)
                done.add(device)
        finally:
            os.close(fd)


def _step() -> None:
    """Test-only: KVMHOOK_TEST_KILL_AT=N kills this process at its N-th durable step."""
    global _steps_taken
    at = os.environ.get("KVMHOOK_TEST_KILL_AT")
    if at:
        _steps_taken += 1
        if _steps_taken == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


_steps_taken = 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_beside(path: str) -> str:
    # Hidden and not ending in .xml: neither libvirt nor the ebuild's glob picks it up.
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.kvmhook-{secrets.token_hex(4)}.tmp")


def _stage(path: str, data: bytes, meta: Meta, keep_mtime: bool, sync: bool = True) -> str:
    """A complete copy of data beside path, with path's metadata (synced unless told)."""
    temp = _temp_beside(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
        _apply_meta(fd, meta, keep_mtime)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(temp)
        raise
    os.close(fd)
    return temp


def _replace_one(path: str, data: bytes, meta: Meta, keep_mtime: bool) -> None:
    """Atomically put data at path with meta, durably."""
    os.rename(_stage(path, data, meta, keep_mtime), path)
    _fsync_dir(os.path.dirname(path))


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _write_json(path: str, doc: dict, sync: bool = True) -> None:
    temp = path + ".tmp"
    _unlink_quietly(temp)
    _write_new(temp, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), sync=sync)
    os.replace(temp, path)
    if sync:
        _fsync_dir(os.path.dirname(path))


def _new_run_dir(root: str) -> str:
    base = backups_dir(root)
    _private_dirs(base)
    for _ in range(100):
        # Names sort by time: undo takes the newest.
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
        run = os.path.join(base, f"{stamp}.{now // 1000 % 10**6:06d}Z")
        try:
            os.mkdir(run, 0o700)
        except FileExistsError:
            continue
        os.chmod(run, 0o700)
        return run
    raise StoreError(f"cannot create a backup folder in {base}")


def replace_files(root: str, plans: list[Planned]) -> str:
    """Back up, then atomically replace every planned file; returns the backup folder.

    Backups, manifest and new files are all written first and made durable together
    (one syncfs per file system rather than an fsync per file); only then is any
    original replaced, each by a rename. A full or read-only disk therefore fails
    before any original is touched, and a crash leaves each file old or new.
    """
    run = None
    staged: list[tuple[str, str]] = []
    metas: list[Meta] = []
    renamed = 0
    try:
        run = _new_run_dir(root)
        metas = _back_up(root, run, plans)
        for plan, meta in zip(plans, metas, strict=True):
            staged.append(
                (_stage(plan.path, plan.new, meta, keep_mtime=False, sync=False), plan.path)
            )
            _step()
        _sync_all([run, *(temp for temp, _ in staged)])
        _step()
        for (temp, path), plan in zip(staged, plans, strict=True):
            _unchanged_or_fail(plan)
            os.rename(temp, path)
            renamed += 1
            _step()
        for folder in sorted({os.path.dirname(p.path) for p in plans}):
            _fsync_dir(folder)
    except (OSError, StoreError) as err:
        for temp, _ in staged[renamed:]:
            _unlink_quietly(temp)
        rolled_back = _roll_back(plans[:renamed], metas)
        if rolled_back and run is not None:
            _remove_tree(run)
        if isinstance(err, StoreError):
            raise
        where = "" if rolled_back else f" (some files were replaced; backups in {run})"
        raise StoreError(_reason(err, "cannot write the fixed configs") + where) from None
    with contextlib.suppress(OSError):
        # The "started" manifest already serves undo; this only records completion.
        _set_state(run, "done")
    _step()
    return run


def _back_up(root: str, run: str, plans: list[Planned]) -> list[Meta]:
    entries, metas = [], []
    for i, plan in enumerate(plans):
        meta = _unchanged_or_fail(plan)
        backup = f"{i:05d}.orig"
        _write_new(os.path.join(run, backup), plan.old, sync=False)
        _step()
        entries.append(
            {
                "path": os.path.relpath(plan.path, root),
                "backup": backup,
                "sha256": sha256(plan.old),
                "new_sha256": sha256(plan.new),
                "meta": meta.as_json(),
            }
        )
        metas.append(meta)
    manifest = {"schema": 1, "state": "started", "entries": entries}
    _write_json(os.path.join(run, "manifest.json"), manifest, sync=False)
    _step()
    return metas


def clean_stale_temps(folders: list[str]) -> None:
    """Remove what a killed run left: its hidden temporary files (never *.xml)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                name = entry.name
                if name.startswith(".") and ".kvmhook-" in name and name.endswith(".tmp"):
                    _unlink_quietly(entry.path)


def _unchanged_or_fail(plan: Planned) -> Meta:
    current = _read_current(plan.path)
    if current is None or current[0] != plan.old:
        raise StoreError(f"{plan.path} changed while kvmhook was working; run it again")
    return current[1]


def _roll_back(done: list[Planned], metas: list[Meta]) -> bool:
    """Put back the originals already replaced; False when one could not be."""
    ok = True
    for plan, meta in zip(done, metas, strict=False):
        try:
            _replace_one(plan.path, plan.old, meta, keep_mtime=True)
        except OSError:
            ok = False
    return ok


def note_rewrite(root: str, run: str, path: str) -> None:
    """Record the bytes a libvirt daemon wrote over a fixed file, so that undo accepts them."""
    manifest = _manifest(run)
    current = _read_current(path)
    if manifest is None or current is None:
        return
    for entry in manifest["entries"]:
        if os.path.join(root, entry["path"]) == path:
            entry.setdefault("rewritten_sha256", []).append(sha256(current[0]))
    _write_json(os.path.join(run, "manifest.json"), manifest)


def _set_state(run: str, state: str) -> None:
    manifest = _manifest(run)
    if manifest is not None:
        manifest["state"] = state
        _write_json(os.path.join(run, "manifest.json"), manifest)


def _remove_tree(folder: str) -> None:
    for name in os.listdir(folder):
        _unlink_quietly(os.path.join(folder, name))
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def _manifest(run: str) -> dict | None:
    try:
        with open(os.path.join(run, "manifest.json"), "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == 1 else None


def last_run(root: str) -> str | None:
    """The newest backup folder whose run has not been undone."""
    base = backups_dir(root)
    try:
        names = sorted(os.listdir(base), reverse=True)
    except FileNotFoundError:
        return None
    for name in names:
        doc = _manifest(os.path.join(base, name))
        if doc is not None and doc.get("state") != "undone":
            return os.path.join(base, name)
    return None


def undo(root: str) -> UndoResult:
    """Restore the files of the last fix run, refusing any that changed since."""
    run = last_run(root)
    if run is None:
        return UndoResult(None, (), ())
    manifest = _manifest(run)
    assert manifest is not None
    restored, refused = [], []
    for entry in manifest["entries"]:
        path = os.path.join(root, entry["path"])
        current = _read_current(path)
        if current is None:
            refused.append((path, "missing or no longer a regular file since the fix"))
            continue
        digest = sha256(current[0])
        if digest == entry["sha256"]:
            continue
        if digest not in (entry["new_sha256"], *entry.get("rewritten_sha256", ())):
            refused.append((path, "changed since the fix run; restore it by hand if wanted"))
            continue
        with open(os.path.join(run, entry["backup"]), "rb") as f:
            original = f.read()
        if sha256(original) != entry["sha256"]:
            refused.append((path, f"its backup in {run} is damaged"))
            continue
        try:
            _replace_one(path, original, Meta.from_json(entry["meta"]), keep_mtime=True)
        except OSError as err:
            raise StoreError(_reason(err, f"cannot restore {path}")) from None
        restored.append(path)
    if not refused:
        _set_state(run, "undone")
    return UndoResult(run, tuple(restored), tuple(refused))


def write_atomic(path: str, data: bytes, new_mode: int = 0o644) -> None:
    """Replace (or create) one file atomically, keeping its metadata when it exists."""
    current = _read_current(path)
    fresh = Meta(new_mode, os.geteuid(), os.getegid(), 0, ())
    meta = current[1] if current is not None else fresh
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _replace_one(path, data, meta, keep_mtime=False)
