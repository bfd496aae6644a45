"""A full disk or a read-only file system: exit 2, one line, every original intact."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
from conftest import Root, domain_xml, run_module, tmpfs

from kvmhook import store

FILES = 5


def populate(r: Root) -> dict[str, bytes]:
    originals = {}
    for i in range(FILES):
        data = domain_xml(f"vm{i}")
        r.add(f"vm{i}.xml", data)
        originals[f"vm{i}.xml"] = data
    return originals


def assert_intact(r: Root, originals: dict[str, bytes]) -> None:
    assert sorted(os.listdir(r.qemu)) == sorted(originals), "a stray or missing file"
    for name, data in originals.items():
        assert (r.qemu / name).read_bytes() == data


def assert_failed_cleanly(proc: subprocess.CompletedProcess, r: Root, originals) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("kvmhook: ")
    assert_intact(r, originals)
    backups = r.path / store.STATE_DIR / "backups"
    assert not backups.exists() or os.listdir(backups) == []


def failing_after(monkeypatch, calls: int, err: int, what: str = "write") -> None:
    """Make the store's os.<what> fail with err after some successful calls."""
    real = getattr(os, what)
    count = {"n": 0}

    def fake(*args, **kw):
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(err, os.strerror(err))
        return real(*args, **kw)

    monkeypatch.setattr(store.os, what, fake)


@pytest.mark.parametrize("calls", range(0, 2 * FILES + 2))
def test_simulated_full_disk_at_every_write(root, monkeypatch, calls):
    originals = populate(root)
    failing_after(monkeypatch, calls, errno.ENOSPC)
    code, _ = root.run("fix")
    err = root.err
    if code == 0:  # every write happened before the failure point
        return
    assert code == 2 and "No space left on device" in err and len(err.splitlines()) == 1
    assert_intact(root, originals)
    assert not (root.path / store.STATE_DIR / "backups").exists() or not os.listdir(
        root.path / store.STATE_DIR / "backups"
    )


@pytest.mark.parametrize("calls", range(0, FILES + 1))
def test_simulated_failing_rename_rolls_back(root, monkeypatch, calls):
    originals = populate(root)
    real = os.rename
    count = {"n": 0}

    def fake(src, dst, *a, **kw):
        # fail the calls-th config rename; let the rollback's renames through
        if dst.endswith(".xml") and count["n"] == calls:
            count["n"] += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        count["n"] += dst.endswith(".xml")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(store.os, "rename", fake)
    code, _ = root.run("fix")
    if calls >= FILES:
        assert code == 0
        return
    assert code == 2 and "Input/output error" in root.err
    assert_intact(root, originals)


def test_simulated_read_only(root, monkeypatch):
    originals = populate(root)
    real_open = os.open

    def read_only_open(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *a, **kw)

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(store.os, "open", read_only_open)
    for name in ("mkdir", "rename", "unlink", "chmod"):
        monkeypatch.setattr(store.os, name, read_only)
    code, _ = root.run("fix")
    assert code == 2 and "Read-only file system" in root.err
    assert_intact(root, originals)


# Real mounts: CI runs as root, where these show the same on a real file system.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def fill(path: Path, leave_pages: int) -> None:
    """Fill the file system, then free leave_pages pages."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    if leave_pages:
        os.truncate(filler, max(0, os.path.getsize(filler) - leave_pages * 4096))


@needs_root
@pytest.mark.parametrize("leave_pages", [0, 1, 2, 4, 6, 8, 10, 12])
def test_real_full_disk(tmp_path, leave_pages):
    with tmpfs(tmp_path / "mnt", "1M") as mnt:
        r = Root(mnt / "root")
        originals = populate(r)
        fill(mnt, leave_pages)
        proc = run_module("fix", "--root", str(r.path))
        if proc.returncode == 0:
            for name, data in originals.items():
                assert (r.qemu / name).read_bytes() == data.replace(
                    b"/usr/bin/qemu-kvm", b"/usr/bin/qemu-system-x86_64"
                )
            assert sorted(os.listdir(r.qemu)) == sorted(originals)
        else:
            assert "No space left on device" in proc.stderr
            assert_failed_cleanly(proc, r, originals)


@needs_root
def test_real_full_disk_fails_at_least_once(tmp_path):
    with tmpfs(tmp_path / "mnt", "1M") as mnt:
        r = Root(mnt / "root")
        originals = populate(r)
        fill(mnt, 0)
        assert_failed_cleanly(run_module("fix", "--root", str(r.path)), r, originals)


@needs_root
def test_real_read_only(tmp_path):
    with tmpfs(tmp_path / "mnt", "1M") as mnt:
        r = Root(mnt / "root")
        originals = populate(r)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        proc = run_module("fix", "--root", str(r.path))
        assert "Read-only file system" in proc.stderr
        assert_failed_cleanly(proc, r, originals)
        # check still works on a read-only root
        assert run_module("check", "--root", str(r.path)).returncode == 1
