"""A real emerge in a portage ResolverPlayground, with the kvmhook snippet wired in.

The set-up follows ../shared/notes/portage-playground.md: portage's own test
conftest cannot be reused from the wheel, so its environment is prepared here.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

TARGETS_IUSE = "qemu_softmmu_targets_x86_64 qemu_softmmu_targets_aarch64"

# What Gentoo's qemu ebuilds do in pkg_pretend since 2.0, written for these tests.
QEMU_PRETEND = textwrap.dedent(
    """
    S="${WORKDIR}"
    pkg_pretend() {
        if grep -qs '/usr/bin/qemu-kvm' "${EROOT}"/etc/libvirt/qemu/*.xml; then
            eerror "The kvm/qemu-kvm wrappers no longer exist, but your libvirt"
            eerror "instances are still pointing to it."
            die "update your virt configs to not use qemu-kvm"
        fi
        einfo "QEMU-OWN-CHECK-PASSED"
    }
    """
)

FOO_PRETEND = textwrap.dedent(
    """
    S="${WORKDIR}"
    pkg_pretend() {
        einfo "FOO-PRETEND-RAN"
    }
    """
)


def _prepare_portage(scratch: Path):
    """What portage's own test conftest does, done by hand (notes, pitfalls 1-3, 6)."""
    os.environ["PORTAGE_USERNAME"] = pwd.getpwuid(os.getuid()).pw_name
    os.environ["PORTAGE_GRPNAME"] = grp.getgrgid(os.getgid()).gr_name
    gnupg = scratch / "gnupg"
    gnupg.mkdir(mode=0o700, exist_ok=True)
    os.environ["PORTAGE_GNUPGHOME"] = str(gnupg)
    import portage

    if "portage.data" in sys.modules:
        import importlib

        importlib.reload(portage.data)
    portage._internal_caller = True
    portage._disable_legacy_globals()
    # The playground's usr/bin/python must be able to import portage (a venv's base cannot).
    wrapper = scratch / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    portage._python_interpreter = str(wrapper)
    # Debian has no gtar.
    bindir = scratch / "bin"
    bindir.mkdir(exist_ok=True)
    if not (bindir / "gtar").exists():
        (bindir / "gtar").symlink_to(shutil.which("tar"))
    if not os.environ["PATH"].startswith(f"{bindir}:"):
        os.environ["PATH"] = f"{bindir}:{os.environ['PATH']}"
    return portage


class Playground:
    """app-emulation/qemu-1.5.3 installed, qemu-2.0.0 and dev-libs/foo-1 to merge."""

    def __init__(
        self,
        scratch: Path,
        make_conf: tuple[str, ...] = (),
        ebuilds: dict | None = None,
        installed: dict | None = None,
        user_config: dict | None = None,
    ):
        portage = _prepare_portage(scratch)
        from portage.tests.resolver.ResolverPlayground import ResolverPlayground

        self.portage = portage
        if ebuilds is None:
            ebuilds = {
                "app-emulation/qemu-2.0.0": {
                    "EAPI": "8",
                    "IUSE": TARGETS_IUSE,
                    "MISC_CONTENT": QEMU_PRETEND,
                },
                "dev-libs/foo-1": {"EAPI": "8", "MISC_CONTENT": FOO_PRETEND},
            }
        if installed is None:
            installed = {
                "app-emulation/qemu-1.5.3": {
                    "EAPI": "8",
                    "IUSE": TARGETS_IUSE,
                    "USE": "qemu_softmmu_targets_x86_64",
                }
            }
        conf = (
            'BINPKG_FORMAT="xpak"',
            'FEATURES="-news"',
            'PORTAGE_ELOG_CLASSES="warn error log"',
            'PORTAGE_ELOG_SYSTEM="save_summary"',
            *make_conf,
        )
        self.pg = ResolverPlayground(
            ebuilds=ebuilds,
            installed=installed,
            user_config={"make.conf": conf, **(user_config or {})},
            eprefix=str(scratch / "eprefix"),
        )
        self.eroot = Path(self.pg.eroot)
        settings = self.pg.settings
        profile = Path(os.path.realpath(self.eroot / "etc/portage/make.profile"))
        with open(profile / "make.defaults", "a") as f:
            f.write('USE_EXPAND="QEMU_SOFTMMU_TARGETS"\n')
        # Pitfall 7: a pip-installed portage looks for its sets under EPREFIX/share.
        sets = self.eroot / "share/portage/config/sets"
        sets.parent.mkdir(parents=True, exist_ok=True)
        if not sets.exists():
            sets.symlink_to(self.eroot / "usr/share/portage/config/sets")
        for d in ("var/tmp/portage", "var/cache/edb", "var/log/portage/elog"):
            (self.eroot / d).mkdir(parents=True, exist_ok=True)
        (self.eroot / "var/cache/edb/counter").write_text("100")
        self.qemu_configs = self.eroot / "etc/libvirt/qemu"
        self.qemu_configs.mkdir(parents=True)
        from portage.const import PORTAGE_BIN_PATH, PORTAGE_PYM_PATH

        self.emerge = [portage._python_interpreter, "-b", os.path.join(PORTAGE_BIN_PATH, "emerge")]
        self.env = {
            "PORTAGE_OVERRIDE_EPREFIX": settings["EPREFIX"],
            "PATH": settings.get("PATH"),
            "PORTAGE_PYTHON": portage._python_interpreter,
            "PORTAGE_REPOSITORIES": settings.repositories.config_string(),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": PORTAGE_PYM_PATH,
            "PORTAGE_INST_GID": str(os.getgid()),
            "PORTAGE_INST_UID": str(os.getuid()),
            "PORTAGE_USERNAME": os.environ["PORTAGE_USERNAME"],
            "PORTAGE_GRPNAME": os.environ["PORTAGE_GRPNAME"],
            "KVMHOOK_PYTHON": sys.executable,
            "NO_COLOR": "1",
        }

    def wire_hook(self) -> None:
        """Exactly what 'kvmhook install-hook' writes into EROOT/etc/portage/bashrc."""
        proc = subprocess.run(
            [sys.executable, "-m", "kvmhook", "install-hook", "--root", str(self.eroot)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "Wired" in proc.stdout

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.emerge, "--oneshot", *args],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=300,
        )

    def installed(self, cpv: str) -> bool:
        return (self.eroot / "var/db/pkg" / cpv).is_dir()

    def elog_summary(self) -> str:
        path = self.eroot / "var/log/portage/elog/summary.log"
        return path.read_text() if path.exists() else ""

    def cleanup(self) -> None:
        self.pg.cleanup()


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="emerge-playground-"))
