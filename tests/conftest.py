from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmhook.__main__ import main

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "virt-manager"

# Folders made by the tests are never group- or world-writable, whatever the caller's umask.
os.umask(0o022)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")

# Real second users: nobody, and a uid with no account that the tests give files to.
NOBODY = pwd.getpwnam("nobody")
OTHER_UID = 4243
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real tmpfs mounted at path for the test (needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, uid, gid)


def as_user(
    uid: int, gid: int, *args: str, prelude: str = "", timeout: float = 120
) -> subprocess.CompletedProcess:
    """kvmhook run by another user (setpriv drops every privilege); prelude is Python run
    first, for a test that takes one way to the daemon away."""
    code = f"import sys\n{prelude}\nfrom kvmhook.__main__ import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        + [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def domain_xml(
    name: str = "vm1",
    emulator: str | None = "/usr/bin/qemu-kvm",
    dtype: str = "kvm",
    arch: str | None = "x86_64",
    extra: str = "",
) -> bytes:
    """A domain written the way libvirt writes one."""
    arch_attr = f" arch='{arch}'" if arch else ""
    emu = f"    <emulator>{emulator}</emulator>\n" if emulator is not None else ""
    return (
        "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE\n"
        "OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:\n"
        f"  virsh edit {name}\nor other application using the libvirt API.\n-->\n\n"
        f"<domain type='{dtype}'>\n"
        f"  <name>{name}</name>\n"
        "  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>\n"
        "  <memory unit='KiB'>1048576</memory>\n"
        "  <vcpu placement='static'>1</vcpu>\n"
        "  <os>\n"
        f"    <type{arch_attr} machine='pc'>hvm</type>\n"
        "    <boot dev='hd'/>\n"
        "  </os>\n"
        f"{extra}"
        "  <devices>\n"
        f"{emu}"
        "    <disk type='file' device='disk'>\n"
        "      <source file='/var/lib/libvirt/images/vm.qcow2'/>\n"
        "      <target dev='vda' bus='virtio'/>\n"
        "    </disk>\n"
        "    <graphics type='vnc' port='-1' passwd='secret'/>\n"
        "  </devices>\n"
        "</domain>\n"
    ).encode()


def line_of(data: bytes, needle: bytes) -> int:
    return data[: data.index(needle)].count(b"\n") + 1


class Root:
    """A throw-away system root with a libvirt config folder."""

    def __init__(self, path: Path, capsys=None, binaries=("x86_64", "aarch64")):
        self.path = path
        self.capsys = capsys
        self.qemu = path / "etc/libvirt/qemu"
        self.qemu.mkdir(parents=True)
        bindir = path / "usr/bin"
        bindir.mkdir(parents=True)
        for target in binaries:
            (bindir / f"qemu-system-{target}").write_text("#!/bin/sh\n")

    def add(self, name: str, data: bytes, mode: int = 0o600) -> Path:
        p = self.qemu / name
        p.write_bytes(data)
        p.chmod(mode)
        return p

    def snapshot(self) -> dict[str, tuple]:
        """Every entry below the root with its bytes' hash and metadata."""
        seen = {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                digest = None
                if os.path.isfile(p) and not os.path.islink(p):
                    digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                seen[os.path.relpath(p, self.path)] = (
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    st.st_mtime_ns,
                    digest,
                )
        return seen

    def run(self, *args: str) -> tuple[int, str]:
        """kvmhook in this process, with --root; (exit status, stdout)."""
        code = main([*args, "--root", str(self.path)])
        captured = self.capsys.readouterr()
        self.err = captured.err
        return code, captured.out

    def json(self, *args: str) -> tuple[int, dict]:
        code, out = self.run(*args, "--json")
        return code, json.loads(out)


def run_module(*args: str, timeout: float = 60, env=None) -> subprocess.CompletedProcess:
    """kvmhook as its own process, as users and the hook run it."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "kvmhook", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def root(tmp_path: Path, capsys) -> Root:
    return Root(tmp_path / "root", capsys)


# The targets the corpus's domains need binaries for.
CORPUS_TARGETS = ("x86_64", "i386", "aarch64", "arm", "ppc64", "riscv64", "s390x", "loongarch64")


@pytest.fixture
def corpus_root(tmp_path: Path, capsys) -> Root:
    """A root whose config folder holds a copy of the shared corpus."""
    r = Root(tmp_path / "root", capsys, binaries=CORPUS_TARGETS)
    for path in sorted(CORPUS.glob("*.xml")):
        shutil.copy(path, r.qemu / path.name)
    return r


@pytest.fixture(autouse=True)
def fast_path_matches_the_full_path(monkeypatch, request):
    """In every test that runs kvmhook in this process, the scan runs both ways, the fast
    path and the full parse of every file, and must give the same findings and bytes
    (a test that changes files during a scan marks itself single_scan)."""
    from kvmhook import scan

    if request.node.get_closest_marker("single_scan"):
        return

    real = scan.scan

    def said(outcomes) -> list:
        return [
            ([f.as_json() for f in o.findings], o.new_data)
            for o in outcomes
            if o.findings or o.new_data is not None
        ]

    def both(tree, facts, verify=True, fast=True, parallel=False):
        quick = real(tree, facts, verify, fast=True, parallel=parallel)
        full = real(tree, facts, verify, fast=False)
        assert said(quick) == said(full), "the fast path changed what kvmhook says"
        return quick if fast else full

    monkeypatch.setattr(scan, "scan", both)
