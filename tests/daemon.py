"""A real, unprivileged session libvirtd whose config folder is a test ROOT's etc/libvirt/qemu.

Set up as measured in ../shared/notes/libvirt-daemon.md. Everything it starts is
stopped by PID, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

USER, GROUP = "nobody", "nogroup"
VIRSH = shutil.which("virsh")
LIBVIRTD = shutil.which("libvirtd") or (
    "/usr/sbin/libvirtd" if os.path.exists("/usr/sbin/libvirtd") else None
)

# A guest that really boots under TCG (no disk, no display): enough to start and destroy.
BOOTABLE = """<domain type='{dtype}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <emulator>{emulator}</emulator>
  </devices>
</domain>
"""


def bootable(
    name="vm1",
    emulator="/usr/bin/qemu-kvm",
    dtype="qemu",
    uuid="6f3c2a1e-95d4-4d2b-8f0e-1a2b3c4d5e6f",
) -> bytes:
    return BOOTABLE.format(name=name, emulator=emulator, dtype=dtype, uuid=uuid).encode()


class Daemon:
    def __init__(self, base: Path, root: Path):
        self.base, self.root = base, root
        self.run_dir = base / "run"
        for d in (base / "home", self.run_dir, base / "cache", root / "etc/libvirt/qemu"):
            d.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        # No virtlogd: it would outlive the daemon.
        (root / "etc/libvirt/qemu.conf").write_text('stdio_handler = "file"\n')
        self.log = base / "libvirtd.log"
        self.proc: subprocess.Popen | None = None
        self.uri = f"qemu+unix:///session?socket={self.run_dir}/libvirt/libvirt-sock"

    def _own(self) -> None:
        user = pwd.getpwnam(USER)
        for path in (Path(os.path.commonpath([self.base, self.root])),):
            for dirpath, dirnames, filenames in os.walk(path):
                for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                    os.lchown(name, user.pw_uid, user.pw_gid)

    def start(self) -> None:
        self._own()
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.base / "home"),
            "XDG_CONFIG_HOME": str(self.root / "etc"),
            "XDG_RUNTIME_DIR": str(self.run_dir),
            "XDG_CACHE_HOME": str(self.base / "cache"),
            "LIBVIRT_LOG_OUTPUTS": f"3:file:{self.log}",
        }
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={USER}", f"--regid={GROUP}", "--clear-groups", LIBVIRTD],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while self.virsh("uri", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not start; see {self.log}")
            time.sleep(0.1)

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [VIRSH, "-q", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C"},
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)}: {proc.stderr}")
        return proc

    def inactive_xml(self, name: str) -> str:
        return self.virsh("dumpxml", "--inactive", name).stdout

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                for name in self.virsh("list", "--name", check=False).stdout.split():
                    self.virsh("destroy", name, check=False)
        # qemu outlives the daemon: stop whatever it left, by the PIDs in its run folder
        for pidfile in self.run_dir.rglob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text().strip())
                if pid != self.proc.pid:
                    os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
