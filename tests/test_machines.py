"""kvmhook's table of QEMU machine types against what real QEMU releases offered."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmhook import qemu

DATA = Path(__file__).parent / "data/machines"


def captures() -> dict[str, dict[qemu.Version, dict[str, bool]]]:
    """arch -> release -> {machine type: deprecated}."""
    found: dict[str, dict[qemu.Version, dict[str, bool]]] = {}
    for path in sorted(DATA.glob("*.txt")):
        arch, version = path.stem.split("-")
        types = {}
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                name, *mark = line.split()
                types[name] = mark == ["deprecated"]
        found.setdefault(arch, {})[qemu.parse_version(version)] = types
    return found


CAPTURES = captures()


@pytest.mark.parametrize("arch", sorted(CAPTURES))
def test_every_captured_type_has_kvmhooks_verdict_at_every_captured_release(arch):
    releases = CAPTURES[arch]
    seen = {name for types in releases.values() for name in types if qemu.family(name)}
    assert len(seen) > 20
    for release, types in releases.items():
        for name in sorted(seen):
            got = qemu.verdict(name, release).status
            if name in types:
                want = "deprecated" if types[name] else "ok"
            elif qemu.family(name)[1] > release:
                want = "newer"
            else:
                want = "removed"
            assert got == want, f"{name} at QEMU {qemu.show(release)}: {got}, captured {want}"
        for name in types:
            if not qemu.family(name):  # isapc, microvm, x-remote: never findings
                assert qemu.verdict(name, release).status == "unversioned"


def test_the_real_qemu_here_removes_none_of_its_own_types():
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        pytest.skip("no qemu-system-x86_64 (the README's test command installs it)")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    release = qemu.parse_version(re.search(r"version (\S+)", version).group(1))
    listed = subprocess.run(
        [binary, "-machine", "help"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[1:]
    names = [line.split()[0] for line in listed if line.strip()]
    assert any(name.startswith("pc-q35-") for name in names)
    for name in names:
        assert qemu.verdict(name, release).status not in ("removed", "foreign", "newer"), name


@pytest.mark.parametrize(
    ("machine", "release", "status", "when"),
    [
        ("pc-q35-4.1", "10.1.0", "removed", (10, 1)),
        ("pc-q35-4.2", "10.1.0", "deprecated", (10, 2)),
        ("pc-q35-4.2", "10.2.0", "removed", (10, 2)),
        ("pc-q35-4.0.1", "10.1.0", "removed", (10, 1)),
        ("pc-q35-4.1", "9.9999", "deprecated", (10, 1)),
        ("pc-q35-4.0.1", "9.9999", "deprecated", (10, 1)),
        ("pc-i440fx-2.3", "9.0.0", "deprecated", (9, 1)),
        ("pc-i440fx-2.3", "9.1.0", "removed", (9, 1)),
        ("pc-q35-5.0", "11.0.0", "removed", (11, 0)),
        ("virt-4.2", "10.1.0", "deprecated", (10, 2)),
        ("virt-4.2", "10.2.0", "removed", (10, 2)),
        ("s390-ccw-virtio-2.8", "10.0.0", "removed", (10, 0)),
        ("pseries-2.12-sxxm", "10.0.0", "removed", (10, 0)),
        ("pc-0.15", "5.0.0", "removed", (5, 0)),
        ("pc-i440fx-10.0", "10.1.0", "ok", None),
        ("pc-q35-10.2", "10.1.0", "newer", None),
        ("pc-q35-4.1", "10.0.50", "removed", (10, 1)),  # a live 10.0.50 builds 10.1
        ("pc-q35-4.2", "9999", "removed", (10, 2)),
    ],
)
def test_boundaries(machine, release, status, when):
    assert qemu.verdict(machine, qemu.parse_version(release)) == (status, when)


@pytest.mark.parametrize("alias", ["pc", "q35", "virt", "s390-ccw-virtio", "pseries", "isapc"])
def test_aliases_are_never_findings(alias):
    assert qemu.verdict(alias, (11, 0)).status == "unversioned"


@pytest.mark.parametrize(
    ("machine", "upstream"),
    [
        ("pc-q35-rhel9.4.0", "pc-q35-"),
        ("pc-i440fx-jammy", "pc-i440fx-"),
        ("pc-i440fx-rhel7.6.0", "pc-i440fx-"),
        ("virt-rhel9.2.0", "virt-"),
        ("pseries-rhel8.5.0", "pseries-"),
    ],
)
def test_foreign_types(machine, upstream):
    assert qemu.verdict(machine, (10, 1)).status == "foreign"
    assert qemu.foreign_family(machine) == upstream


def test_newest_type_both_releases_provide():
    assert qemu.newest_common("pc-q35-", (10, 0), (10, 1)) == "pc-q35-10.0"
    assert qemu.newest_common("pc-i440fx-", (10, 1), (9, 2)) == "pc-i440fx-9.2"
    assert qemu.newest_common("pc-", (5, 0), (6, 0)) is None  # that family is gone
