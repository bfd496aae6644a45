"""Domains on machine types the pending qemu removes, deprecates or never had."""

from __future__ import annotations

import os

import pytest
from conftest import domain_xml

RELEASES = ("--qemu-version", "10.1.0", "--installed-version", "10.0.0")
NEW = "/usr/bin/qemu-system-x86_64"


def on(machine: str | None, name: str = "vm1", arch: str = "x86_64") -> bytes:
    data = domain_xml(name, emulator=NEW, arch=arch)
    if machine is None:
        return data.replace(b" machine='pc'", b"")
    return data.replace(b"machine='pc'", f"machine='{machine}'".encode())


def machine_findings(doc: dict) -> list[tuple[str, str, str | None, bool]]:
    return [
        (f["kind"], f["severity"], f["proposed"], f["fixable"])
        for f in doc["findings"]
        if "machine" in f["kind"] or f["kind"] == "saved-state"
    ]


def test_a_removed_type_is_an_error_that_plain_fix_leaves_alone(root):
    vm = root.add("vm1.xml", on("pc-q35-4.1"))
    code, doc = root.json("check", *RELEASES)
    assert code == 1
    assert machine_findings(doc) == [("removed-machine", "error", "pc-q35-10.0", False)]
    (f,) = [f for f in doc["findings"] if f["kind"] == "removed-machine"]
    assert "QEMU 10.1 removed it" in f["message"] and "kvmhook fix --machines" in f["message"]
    code, doc = root.json("fix", *RELEASES)
    assert code == 1 and doc["fixed"] == [] and vm.read_bytes() == on("pc-q35-4.1")


def test_fix_machines_is_the_minimal_edit_and_undo_restores_it(root):
    vm = root.add("vm1.xml", on("pc-q35-4.1"))
    code, doc = root.json("fix", "--machines", *RELEASES)
    assert code == 0, doc
    assert vm.read_bytes() == on("pc-q35-10.0")  # only the attribute's bytes changed
    assert [c["kind"] for c in doc["changes"]] == ["removed-machine"]
    assert root.json("check", *RELEASES)[1]["findings"] == []
    code, doc = root.json("undo")
    assert code == 0 and vm.read_bytes() == on("pc-q35-4.1")


def test_it_never_moves_between_i440fx_and_q35(root):
    vm = root.add("vm1.xml", on("pc-i440fx-4.1"))
    root.json("fix", "--machines", *RELEASES)
    assert vm.read_bytes() == on("pc-i440fx-10.0")


@pytest.mark.parametrize(
    ("machine", "release", "kinds"),
    [
        ("pc-q35-4.2", "10.1.0", [("deprecated-machine", "warning", "pc-q35-10.0", False)]),
        ("pc-q35-4.2", "10.2.0", [("removed-machine", "error", "pc-q35-10.0", False)]),
        ("pc-q35-4.0.1", "10.1.0", [("removed-machine", "error", "pc-q35-10.0", False)]),
        ("pc-q35-4.1", "9.9999", [("deprecated-machine", "warning", "pc-q35-9.2", False)]),
        ("pc-i440fx-2.3", "9.0.0", [("deprecated-machine", "warning", "pc-i440fx-9.0", False)]),
        ("pc-i440fx-2.3", "9.1.0", [("removed-machine", "error", "pc-i440fx-9.1", False)]),
        ("pc-q35-rhel9.4.0", "10.1.0", [("foreign-machine", "warning", "pc-q35-10.0", False)]),
        ("pc-i440fx-jammy", "10.1.0", [("foreign-machine", "warning", "pc-i440fx-10.0", False)]),
        ("pc", "10.1.0", []),
        ("q35", "10.1.0", []),
        (None, "10.1.0", []),
        ("pc-q35-10.0", "10.1.0", []),
    ],
)
def test_machine_type_verdicts_on_domains(root, machine, release, kinds):
    root.add("vm1.xml", on(machine))
    _, doc = root.json("check", "--qemu-version", release, "--installed-version", "10.0.0")
    assert machine_findings(doc) == kinds


def test_aarch64_virt_types(root):
    root.add("arm.xml", on("virt-4.2", arch="aarch64"))
    _, doc = root.json("check", "--qemu-version", "10.2.0", "--installed-version", "10.1.0")
    assert machine_findings(doc) == [("removed-machine", "error", "virt-10.1", False)]
    _, doc = root.json("check", "--qemu-version", "10.1.0", "--installed-version", "10.0.0")
    assert machine_findings(doc) == [("deprecated-machine", "warning", "virt-10.0", False)]


def test_without_an_installed_version_the_finding_explains_two_steps(root):
    root.add("vm1.xml", on("pc-q35-4.1"))
    _, doc = root.json("check", "--qemu-version", "10.1.0")
    (f,) = [f for f in doc["findings"] if f["kind"] == "removed-machine"]
    assert f["proposed"] is None and not f["fixable"]
    assert "merge, then run 'kvmhook fix --machines'" in f["message"]


def saved(root, name: str, kind: str) -> str:
    base = root.path / "var/lib/libvirt/qemu"
    if kind == "managed-save":
        path = base / "save" / f"{name}.save"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"LibvirtQemudSave")
    else:
        path = base / "snapshot" / name / "snap1.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        memory = "internal" if kind == "memory snapshot" else "no"
        path.write_text(
            f"<domainsnapshot><name>snap1</name><state>running</state>"
            f"<memory snapshot='{memory}'/></domainsnapshot>\n"
        )
    return str(path)


@pytest.mark.parametrize("kind", ["managed-save", "memory snapshot"])
def test_saved_state_of_a_removed_type_is_an_error_and_blocks_the_move(root, kind):
    vm = root.add("vm1.xml", on("pc-q35-4.1"))
    path = saved(root, "vm1", kind)
    code, doc = root.json("fix", "--machines", *RELEASES)
    assert code == 1 and vm.read_bytes() == on("pc-q35-4.1")
    state = [f for f in doc["findings"] if f["kind"] == "saved-state"]
    assert [(f["severity"], f["current"]) for f in state] == [("error", path)]
    assert "resume the guest" in state[0]["message"]
    (removed,) = [f for f in doc["findings"] if f["kind"] == "removed-machine"]
    assert not removed["fixable"] and "saved state" in removed["message"]


def test_saved_state_is_a_warning_when_the_type_stays(root):
    root.add("vm1.xml", on("pc-q35-10.0"))
    saved(root, "vm1", "managed-save")
    saved(root, "other", "disk-only snapshot")  # no memory: nothing to restore
    code, doc = root.json("check", *RELEASES)
    assert code == 0 and machine_findings(doc) == [("saved-state", "warning", None, False)]


def test_saved_state_is_read_without_following_links(root, tmp_path):
    root.add("vm1.xml", on("pc-q35-10.0"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "vm1.save").write_bytes(b"x")
    (root.path / "var/lib/libvirt/qemu").mkdir(parents=True)
    os.symlink(elsewhere, root.path / "var/lib/libvirt/qemu/save")
    _, doc = root.json("check", *RELEASES)
    assert machine_findings(doc) == []


@pytest.mark.parametrize("mode", ["explain", "fix", "warn"])
def test_the_hook_warns_of_a_deprecated_type_in_every_mode_and_goes_on(root, mode):
    root.add("vm1.xml", on("pc-q35-4.2"))
    code, out = root.run("hook", "--mode", mode, *RELEASES)
    assert code == 0
    assert any(
        line.startswith("ewarn") and "deprecated-machine" in line for line in out.splitlines()
    )


@pytest.mark.parametrize(("machines", "code"), [("stop", 3), ("warn", 0)])
def test_the_hook_stops_for_a_removed_type_unless_told_to_warn(root, machines, code):
    vm = root.add("vm1.xml", on("pc-q35-4.1"))
    got, out = root.run("hook", "--machines", machines, *RELEASES)
    assert got == code and "removed-machine" in out
    level = "eerror" if code else "ewarn"
    assert any(line.startswith(level) and "removed-machine" in line for line in out.splitlines())
    assert vm.read_bytes() == on("pc-q35-4.1")


def test_update_moves_types_only_in_the_hooks_fix_mode(root):
    vm = root.add("vm1.xml", on("pc-q35-4.1"))
    assert root.run("hook", "--machines", "update", *RELEASES)[0] == 3  # explain: no change
    assert vm.read_bytes() == on("pc-q35-4.1")
    code, out = root.run("hook", "--mode", "fix", "--machines", "update", *RELEASES)
    assert code == 0 and vm.read_bytes() == on("pc-q35-10.0")
