"""Real emerge of app-emulation/qemu in a portage playground, with the hook wired in."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import domain_xml

pytest.importorskip("portage", reason="portage is a test dependency: pip install -e '.[test]'")

from playground import QEMU_PRETEND, Playground, scratch_dir  # noqa: E402

QEMU = "=app-emulation/qemu-2.0.0"
EBUILD_DIES = "update your virt configs to not use qemu-kvm"
NEW = b"/usr/bin/qemu-system-x86_64"


@pytest.fixture
def make_playground():
    made = []

    def make(*make_conf: str, wire: bool = True) -> Playground:
        scratch = scratch_dir()
        pg = Playground(scratch, ('QEMU_SOFTMMU_TARGETS="x86_64"', *make_conf))
        made.append((pg, scratch))
        if wire:
            pg.wire_hook()
        return pg

    yield make
    for pg, scratch in made:
        pg.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


def stale(pg: Playground) -> dict[str, bytes]:
    files = {
        "vm1.xml": domain_xml("vm1"),
        "vm2.xml": domain_xml("vm2", dtype="qemu"),
        "ok.xml": domain_xml("ok", emulator="/usr/bin/qemu-system-x86_64"),
    }
    for name, data in files.items():
        (pg.qemu_configs / name).write_bytes(data)
        (pg.qemu_configs / name).chmod(0o600)
    return files


def configs(pg: Playground) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in pg.qemu_configs.iterdir()}


def test_explain_stops_the_merge_and_names_each_file(make_playground):
    pg = make_playground()
    files = stale(pg)
    proc = pg.run(QEMU)
    assert proc.returncode == 1, proc.stdout
    assert not pg.installed("app-emulation/qemu-2.0.0")
    assert pg.installed("app-emulation/qemu-1.5.3")
    assert configs(pg) == files
    summary = pg.elog_summary()
    for name in ("vm1.xml", "vm2.xml"):
        path = str(pg.qemu_configs / name)
        assert path in proc.stdout and path in summary
    assert "ok.xml" not in proc.stdout
    assert f"kvmhook fix --root {pg.eroot} --targets x86_64" in proc.stdout
    assert f"kvmhook undo --root {pg.eroot}" in proc.stdout
    assert "type='qemu' -> type='kvm'" in proc.stdout
    # our explanation stops it before the ebuild's own, generic check runs
    assert EBUILD_DIES not in proc.stdout and "QEMU-OWN-CHECK-PASSED" not in proc.stdout
    assert "failed (pretend phase)" in proc.stdout


def test_fix_repairs_and_the_merge_goes_on(make_playground):
    pg = make_playground('KVMHOOK_MODE="fix"')  # from make.conf
    files = stale(pg)
    proc = pg.run(QEMU)
    assert proc.returncode == 0, proc.stdout
    assert pg.installed("app-emulation/qemu-2.0.0")
    assert "QEMU-OWN-CHECK-PASSED" in proc.stdout
    now = configs(pg)
    assert now["vm1.xml"] == files["vm1.xml"].replace(b"/usr/bin/qemu-kvm", NEW)
    assert now["vm2.xml"] == domain_xml("vm2", dtype="kvm", emulator=NEW.decode())
    assert now["ok.xml"] == files["ok.xml"]
    backups = list((pg.eroot / "var/lib/kvmhook/backups").iterdir())
    assert len(backups) == 1 and (backups[0] / "manifest.json").is_file()
    summary = pg.elog_summary()
    assert f"kvmhook: backups in {backups[0]}" in summary
    assert f"fixed {pg.qemu_configs / 'vm1.xml'}" in summary


def test_fix_stops_on_a_mention_it_cannot_rewrite(make_playground):
    pg = make_playground()
    extra = "  <!-- moved off /usr/bin/qemu-kvm in 2014 -->\n"
    data = domain_xml(emulator="/usr/bin/qemu-system-x86_64", extra=extra)
    (pg.qemu_configs / "vm.xml").write_bytes(data)
    proc = pg.run(QEMU, KVMHOOK_MODE="fix")
    assert proc.returncode == 1
    assert "[grep-match]" in proc.stdout and "kvmhook:" in proc.stdout
    assert EBUILD_DIES not in proc.stdout
    assert (pg.qemu_configs / "vm.xml").read_bytes() == data
    assert not pg.installed("app-emulation/qemu-2.0.0")


def test_warn_reports_and_leaves_the_decision_to_the_ebuild(make_playground):
    pg = make_playground()
    files = stale(pg)
    proc = pg.run(QEMU, KVMHOOK_MODE="warn")
    assert proc.returncode == 1
    assert "vm1.xml" in proc.stdout and EBUILD_DIES in proc.stdout
    assert proc.stdout.index("kvmhook:") < proc.stdout.index(EBUILD_DIES)
    assert configs(pg) == files
    assert str(pg.qemu_configs / "vm1.xml") in pg.elog_summary()


def test_warn_with_only_kvm_wrappers_the_ebuild_ignores(make_playground):
    pg = make_playground()
    (pg.qemu_configs / "deb.xml").write_bytes(domain_xml(emulator="/usr/bin/kvm"))
    proc = pg.run(QEMU, KVMHOOK_MODE="warn")
    assert proc.returncode == 0 and "QEMU-OWN-CHECK-PASSED" in proc.stdout
    assert "[wrapper-emulator]" in proc.stdout


def test_off_does_nothing(make_playground):
    pg = make_playground()
    files = stale(pg)
    proc = pg.run(QEMU, KVMHOOK_MODE="off")
    assert proc.returncode == 1 and EBUILD_DIES in proc.stdout
    assert "kvmhook:" not in proc.stdout and "[wrapper-emulator]" not in proc.stdout
    assert configs(pg) == files


def test_other_packages_start_no_kvmhook_process(make_playground, tmp_path):
    pg = make_playground()
    stale(pg)
    log = tmp_path / "kvmhook-started"
    spy = tmp_path / "python"
    spy.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {sys.executable} "$@"\n')
    spy.chmod(0o755)
    proc = pg.run("dev-libs/foo", KVMHOOK_PYTHON=str(spy), KVMHOOK_MODE="fix")
    assert proc.returncode == 0, proc.stdout
    assert "FOO-PRETEND-RAN" in proc.stdout  # the pretend phase, and so the hook, ran
    assert not log.exists()
    # the same spy does see the qemu merge
    pg.run(QEMU, KVMHOOK_PYTHON=str(spy))
    assert "hook --mode explain" in log.read_text()


def test_targets_change_is_caught(make_playground):
    pg = make_playground()
    data = domain_xml("arm", arch="aarch64", emulator="/usr/bin/qemu-system-aarch64")
    (pg.qemu_configs / "arm.xml").write_bytes(data)
    for mode in ("explain", "fix"):
        proc = pg.run(QEMU, KVMHOOK_MODE=mode)
        assert proc.returncode == 1, proc.stdout
        assert "[removed-target]" in proc.stdout
        assert "qemu_softmmu_targets_aarch64" in proc.stdout
        assert (pg.qemu_configs / "arm.xml").read_bytes() == data
    # with the target enabled for qemu, the merge goes on
    (pg.eroot / "etc/portage/package.use").write_text(
        "app-emulation/qemu qemu_softmmu_targets_aarch64\n"
    )
    proc = pg.run(QEMU)
    assert proc.returncode == 0, proc.stdout


def test_unrunnable_kvmhook_leaves_the_ebuild_in_charge(make_playground):
    pg = make_playground()
    stale(pg)
    proc = pg.run(QEMU, KVMHOOK_PYTHON="/nonexistent/python3")
    assert "kvmhook: /nonexistent/python3 not found" in proc.stdout
    assert EBUILD_DIES in proc.stdout and proc.returncode == 1


def test_user_hook_is_chained(make_playground):
    pg = make_playground(wire=False)
    bashrc = pg.eroot / "etc/portage/bashrc"
    bashrc.write_text('pre_pkg_pretend() { einfo "USER-PRE-PRETEND ${PN}"; }\n')
    pg.wire_hook()
    stale(pg)
    proc = pg.run(QEMU)
    assert "USER-PRE-PRETEND qemu" in proc.stdout and "[wrapper-emulator]" in proc.stdout
    assert proc.returncode == 1


def test_names_cannot_add_lines_to_emerges_output(make_playground):
    """A file or domain name with a newline or an escape stays one inert line in emerge's
    output, through portage's own eerror (which runs echo -e)."""
    pg = make_playground()
    (pg.qemu_configs / "odd\x1b[2J\n.xml").write_bytes(
        domain_xml("vm\n * ERROR: spoofed line \\e[7mMARK")
    )
    proc = pg.run(QEMU)
    assert proc.returncode == 1, proc.stdout
    out = proc.stdout
    assert "\x1b[2J" not in out and "\x1b[7mMARK" not in out
    assert not any(line.lstrip().startswith("* ERROR: spoofed") for line in out.splitlines())
    assert "odd\\x1b[2J\\n.xml" in out and "vm\\n * ERROR: spoofed line \\e[7mMARK" in out


def test_a_venv_install_runs_although_portages_python3_has_no_kvmhook(make_playground):
    """install-hook wires the interpreter of the installation it runs from (this venv); the
    pretend phase's python3 (/usr/bin/python3, without kvmhook) plays no part."""
    pg = make_playground()
    files = stale(pg)
    env = {k: v for k, v in pg.env.items() if k != "KVMHOOK_PYTHON"}
    bare = subprocess.run(
        ["python3", "-I", "-c", "import kvmhook"], env={"PATH": env["PATH"]}, capture_output=True
    )
    assert bare.returncode != 0, "this test needs a python3 on PATH without kvmhook"
    pg.env = env
    proc = pg.run(QEMU)
    assert proc.returncode == 1, proc.stdout
    assert "need attention" in proc.stdout and "could not run" not in proc.stdout
    assert not pg.installed("app-emulation/qemu-2.0.0")
    assert configs(pg) == files


@pytest.fixture
def upgrade_to_10_1():
    """qemu-10.1.0 to merge over an installed 10.0.0, with one guest on pc-q35-4.1."""
    scratch = scratch_dir()
    iuse = "qemu_softmmu_targets_x86_64 qemu_softmmu_targets_aarch64"
    pg = Playground(
        scratch,
        ('QEMU_SOFTMMU_TARGETS="x86_64"',),
        ebuilds={
            "app-emulation/qemu-10.1.0": {"EAPI": "8", "IUSE": iuse, "MISC_CONTENT": QEMU_PRETEND}
        },
        installed={"app-emulation/qemu-10.0.0": {"EAPI": "8", "IUSE": iuse}},
    )
    pg.wire_hook()
    guest = pg.qemu_configs / "old.xml"
    guest.write_bytes(
        domain_xml("old", emulator=NEW.decode()).replace(b"machine='pc'", b"machine='pc-q35-4.1'")
    )
    guest.chmod(0o600)
    yield pg, guest
    pg.cleanup()
    shutil.rmtree(scratch, ignore_errors=True)


def test_explain_stops_a_merge_that_removes_a_guests_machine_type(upgrade_to_10_1):
    pg, guest = upgrade_to_10_1
    before = guest.read_bytes()
    proc = pg.run("=app-emulation/qemu-10.1.0")
    assert proc.returncode == 1, proc.stdout
    assert "old.xml (domain old)" in proc.stdout and "removed-machine" in proc.stdout
    assert "pc-q35-4.1 -> pc-q35-10.0" in proc.stdout
    assert not pg.installed("app-emulation/qemu-10.1.0") and guest.read_bytes() == before


def test_machines_warn_merges_and_warns(upgrade_to_10_1):
    pg, guest = upgrade_to_10_1
    proc = pg.run("=app-emulation/qemu-10.1.0", KVMHOOK_MACHINES="warn")
    assert proc.returncode == 0, proc.stdout
    assert pg.installed("app-emulation/qemu-10.1.0")
    assert "removed-machine" in pg.elog_summary() and b"pc-q35-4.1" in guest.read_bytes()


def test_fix_with_machines_update_moves_the_guest_and_merges(upgrade_to_10_1):
    pg, guest = upgrade_to_10_1
    before = guest.read_bytes()
    proc = pg.run("=app-emulation/qemu-10.1.0", KVMHOOK_MODE="fix", KVMHOOK_MACHINES="update")
    assert proc.returncode == 0, proc.stdout
    assert pg.installed("app-emulation/qemu-10.1.0")
    assert guest.read_bytes() == before.replace(b"pc-q35-4.1", b"pc-q35-10.0")
    assert "pc-q35-4.1 -> pc-q35-10.0" in pg.elog_summary()
