"""What the pending qemu merge installs, asked of portage for ROOT (a real playground)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import domain_xml

pytest.importorskip("portage", reason="portage is a dependency: pip install -e '.[test]'")

from playground import QEMU_PRETEND, Playground, scratch_dir  # noqa: E402

IUSE = " ".join(f"qemu_softmmu_targets_{t}" for t in ("x86_64", "i386", "aarch64"))
OLD = "app-emulation/qemu-1.7.1"


def qemu(version: str) -> dict:
    return {"EAPI": "8", "IUSE": IUSE, "MISC_CONTENT": QEMU_PRETEND}


@pytest.fixture
def gentoo():
    """A Gentoo ROOT: qemu-1.7.1 installed (with its i386 and x86_64 binaries), 9.2.3 and
    10.1.0 in the repository, QEMU_SOFTMMU_TARGETS="x86_64" in make.conf."""
    made = []

    def make(**user_config) -> Playground:
        scratch = scratch_dir()
        pg = Playground(
            scratch,
            ('QEMU_SOFTMMU_TARGETS="x86_64"',),
            ebuilds={f"app-emulation/qemu-{v}": qemu(v) for v in ("9.2.3", "10.1.0")},
            installed={
                OLD: {
                    "EAPI": "8",
                    "IUSE": IUSE,
                    "USE": "qemu_softmmu_targets_x86_64 qemu_softmmu_targets_i386",
                }
            },
            user_config=user_config,
        )
        made.append((pg, scratch))
        bindir = pg.eroot / "usr/bin"
        bindir.mkdir(parents=True, exist_ok=True)
        for target in ("i386", "x86_64"):
            (bindir / f"qemu-system-{target}").write_text("#!/bin/sh\n")
        return pg

    yield make
    for pg, scratch in made:
        pg.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


def kvmhook(pg: Playground, *args: str, prelude: str = "") -> tuple[int, dict]:
    code = f"import sys\n{prelude}\nfrom kvmhook.__main__ import main\nsys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args, "--root", str(pg.eroot), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def guest(pg: Playground, name: str, arch: str) -> None:
    (pg.qemu_configs / f"{name}.xml").write_bytes(domain_xml(name, arch=arch))


def proposed(doc: dict, name: str) -> dict:
    (f,) = [f for f in doc["findings"] if f["domain"] == name and f["kind"] == "wrapper-emulator"]
    return f


def test_portage_names_the_pending_version_and_its_targets(gentoo):
    pg = gentoo()
    guest(pg, "old32", "i686")
    code, doc = kvmhook(pg, "check")
    assert doc["merge"] == {
        "installed": ["1.7.1"],
        "pending": "10.1.0",
        "targets": ["x86_64"],
        "source": "portage",
    }
    # qemu-system-i386 is still in usr/bin, but the merge removes it: x86_64 runs the guest
    f = proposed(doc, "old32")
    assert f["proposed"] == "/usr/bin/qemu-system-x86_64" and f["fixable"]
    proc = subprocess.run(
        [sys.executable, "-m", "kvmhook", "check", "--root", str(pg.eroot)],
        capture_output=True,
        text=True,
    )
    first = proc.stdout.splitlines()[0]
    assert first == f" * {OLD} installed, 10.1.0 pending, targets x86_64 (from portage)"


def test_a_masked_version_is_not_pending(gentoo):
    pg = gentoo(**{"package.mask": ("=app-emulation/qemu-10.1.0",)})
    _, doc = kvmhook(pg, "check")
    assert doc["merge"]["pending"] == "9.2.3"


def test_package_use_adds_a_target(gentoo):
    pg = gentoo(**{"package.use": ("app-emulation/qemu qemu_softmmu_targets_aarch64",)})
    guest(pg, "arm", "aarch64")
    code, doc = kvmhook(pg, "check")
    assert doc["merge"]["targets"] == ["aarch64", "x86_64"]
    f = proposed(doc, "arm")
    assert f["fixable"] and f["proposed"] == "/usr/bin/qemu-system-aarch64"
    # without it, the aarch64 guest has no binary after the merge
    pg2 = gentoo()
    guest(pg2, "arm", "aarch64")
    assert not proposed(kvmhook(pg2, "check")[1], "arm")["fixable"]


def test_options_win_over_portage(gentoo):
    pg = gentoo()
    _, doc = kvmhook(pg, "check", "--targets", "aarch64")
    assert doc["merge"] == {
        "installed": ["1.7.1"],
        "pending": "10.1.0",
        "targets": ["aarch64"],
        "source": "options",
    }
    # with every fact given, portage is not asked at all
    _, doc = kvmhook(
        pg,
        "check",
        "--targets",
        "aarch64",
        "--qemu-version",
        "9.9.9",
        prelude="sys.modules['portage'] = None",
    )
    assert doc["merge"] == {
        "installed": [],
        "pending": "9.9.9",
        "targets": ["aarch64"],
        "source": "options",
    }
    # --targets is checked against what the pending ebuild offers
    proc = subprocess.run(
        [sys.executable, "-m", "kvmhook", "check", "--root", str(pg.eroot), "--targets", "s390x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "'s390x' is not a QEMU softmmu target" in proc.stderr


def test_without_portage_it_falls_back_and_says_so(gentoo, tmp_path):
    pg = gentoo()
    guest(pg, "old32", "i686")
    code, doc = kvmhook(pg, "check", prelude="sys.modules['portage'] = None")
    assert doc["merge"]["source"] == "ROOT/usr/bin" and doc["merge"]["pending"] is None
    assert proposed(doc, "old32")["proposed"] == "/usr/bin/qemu-system-i386"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['portage'] = None\n"
            "from kvmhook.__main__ import main; sys.exit(main())",
            "check",
            "--root",
            str(pg.eroot),
        ],
        capture_output=True,
        text=True,
    )
    assert "portage cannot be imported" in proc.stdout.splitlines()[0]
    # a root that is not a Gentoo system is not asked at all
    plain = tmp_path / "plain"
    (plain / "etc/libvirt/qemu").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "kvmhook", "check", "--root", str(plain)],
        capture_output=True,
        text=True,
    )
    assert "is not a Gentoo system" in proc.stdout.splitlines()[0]


def test_the_hook_never_asks_portage(gentoo):
    pg = gentoo()
    guest(pg, "old32", "i686")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nclass NoPortage:\n    def find_spec(self, name, *a):\n"
            "        if name == 'portage': raise AssertionError('portage imported')\n"
            "sys.meta_path.insert(0, NoPortage())\n"
            "from kvmhook.__main__ import main; sys.exit(main())",
            "hook",
            "--root",
            str(pg.eroot),
            "--qemu-version",
            "10.1.0",
            "--targets",
            "x86_64",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "qemu-system-x86_64" in proc.stdout
