"""Fixes that a running libvirt daemon keeps, against a real session libvirtd."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import NOBODY, OTHER_UID, Root, as_user, chown_tree, domain_xml
from daemon import LIBVIRTD, USER, VIRSH, Daemon, bootable

from kvmhook.__main__ import main

NEW = "/usr/bin/qemu-system-x86_64"

if os.geteuid() != 0:
    pytestmark = pytest.mark.skip(reason="starting libvirtd as an unprivileged user needs root")
elif not (LIBVIRTD and VIRSH) and not os.environ.get("CI"):
    pytestmark = pytest.mark.skip(reason="libvirtd and virsh are not installed (.ci/run does it)")


class DaemonRoot(Root):
    """A ROOT that belongs to the daemon's user, who runs kvmhook on it: root does not
    write in another user's folder (see test_security.py for what root does there)."""

    def run(self, *args: str, prelude: str = "") -> tuple[int, str]:
        if sys.modules.get("libvirt", 0) is None:  # the virsh backend: no libvirt-python
            prelude += "\nsys.modules['libvirt'] = None"
        user = pwd.getpwnam(USER)
        proc = as_user(user.pw_uid, user.pw_gid, *args, "--root", str(self.path), prelude=prelude)
        self.err = proc.stderr
        return proc.returncode, proc.stdout

    def json(self, *args: str, prelude: str = "") -> tuple[int, dict]:
        code, out = self.run(*args, "--json", prelude=prelude)
        assert out, self.err
        return code, json.loads(out)


@pytest.fixture
def daemon_root(capsys):
    """A test ROOT whose etc/libvirt/qemu is a running session daemon's config folder."""
    # Not under pytest's tmp_path: the daemon's user must be able to reach it.
    base = Path(tempfile.mkdtemp(prefix="kvmhook-libvirtd-"))
    root = DaemonRoot(base / "root", capsys)
    daemon = Daemon(base / "daemon", root.path)
    root.daemon = daemon
    try:
        yield root
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["libvirt-python", "virsh"])
def backend(request, monkeypatch, tmp_path):
    """Take one way to the daemon away, so that the other is the one used."""
    if request.param == "virsh":
        monkeypatch.setitem(sys.modules, "libvirt", None)  # import libvirt fails
    else:
        pytest.importorskip("libvirt", reason="libvirt-python is a test dependency")
        empty = tmp_path / "empty-path"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))  # no virsh to be found
    return request.param


def start_with(root: Root, files: dict[str, bytes]) -> Daemon:
    for name, data in files.items():
        root.add(name, data)
    root.daemon.start()
    return root.daemon


def test_fix_survives_config_changes_and_the_domain_starts(daemon_root, backend):
    d = start_with(daemon_root, {"vm1.xml": bootable()})
    assert "vm1" in d.virsh("list", "--all", "--name").stdout
    refused = d.virsh("start", "vm1", check=False)
    assert refused.returncode != 0 and "/usr/bin/qemu-kvm" in refused.stderr

    code, doc = daemon_root.json("fix", "--connect", d.uri, "--keep-type", "--targets", "x86_64")
    assert code == 0, doc
    assert doc["daemon"]["reached"] and doc["daemon"]["via"] == backend
    (synced,) = doc["synced"]
    assert (synced["domain"], synced["how"], synced["verified"]) == ("vm1", "defined", True)
    assert f"<emulator>{NEW}</emulator>" in d.inactive_xml("vm1")

    d.virsh("desc", "vm1", "--config", "edited after the fix")
    d.virsh("setmaxmem", "vm1", "131072", "--config")
    on_disk = (daemon_root.qemu / "vm1.xml").read_text()
    assert f"<emulator>{NEW}</emulator>" in on_disk and "edited after the fix" in on_disk
    assert "/usr/bin/qemu-kvm" not in on_disk

    d.virsh("start", "vm1")
    assert d.virsh("domstate", "vm1").stdout.strip() == "running"
    d.virsh("destroy", "vm1")


def test_refused_definition_falls_back_to_a_reload(daemon_root):
    # The session daemon has no /dev/kvm: it refuses to define type='kvm'.
    d = start_with(daemon_root, {"vm1.xml": bootable()})
    code, doc = daemon_root.json("fix", "--connect", d.uri, "--targets", "x86_64")
    assert code == 0, doc
    (synced,) = doc["synced"]
    assert synced["how"] == "reloaded" and synced["verified"]
    assert "kvm" in synced["note"]
    held = d.inactive_xml("vm1")
    assert f"<emulator>{NEW}</emulator>" in held and "type='kvm'" in held
    d.virsh("desc", "vm1", "--config", "x")
    assert f"<emulator>{NEW}</emulator>" in (daemon_root.qemu / "vm1.xml").read_text()


def test_check_reports_a_file_edited_behind_the_daemon(daemon_root):
    d = start_with(daemon_root, {"vm1.xml": bootable()})
    path = daemon_root.qemu / "vm1.xml"
    # what the usual sed loop does while the daemon runs
    path.write_bytes(path.read_bytes().replace(b"/usr/bin/qemu-kvm", NEW.encode()))
    code, doc = daemon_root.json("check", "--connect", d.uri)
    assert code == 1
    (f,) = doc["findings"]
    assert (f["kind"], f["severity"], f["fixable"]) == ("daemon-differs", "error", True)
    assert "/usr/bin/qemu-kvm" in f["current"] and NEW in f["proposed"]
    # fix brings the daemon in line with the file, and the next config change keeps it
    code, doc = daemon_root.json("fix", "--connect", d.uri, "--keep-type", "--targets", "x86_64")
    assert code == 0 and doc["synced"][0]["verified"], doc
    d.virsh("setmaxmem", "vm1", "131072", "--config")
    assert f"<emulator>{NEW}</emulator>" in path.read_text()
    assert daemon_root.json("check", "--connect", d.uri)[1]["findings"] == []


def test_hand_edit_that_is_not_stale_is_a_warning(daemon_root):
    d = start_with(daemon_root, {"vm1.xml": bootable(emulator=NEW)})
    path = daemon_root.qemu / "vm1.xml"
    path.write_bytes(path.read_bytes().replace(b"type='qemu'", b"type='kvm'"))
    code, doc = daemon_root.json("check", "--connect", d.uri)
    (f,) = doc["findings"]
    assert code == 0 and (f["kind"], f["severity"]) == ("daemon-differs", "warning")
    assert f"virsh -c {d.uri} define {path}" in f["message"]


def test_undo_brings_the_daemon_back(daemon_root, backend):
    original = bootable()
    d = start_with(daemon_root, {"vm1.xml": original})
    code, _ = daemon_root.json("fix", "--connect", d.uri, "--keep-type", "--targets", "x86_64")
    assert code == 0
    code, doc = daemon_root.json("undo", "--connect", d.uri)
    assert code == 0, doc
    assert (daemon_root.qemu / "vm1.xml").read_bytes() == original
    (synced,) = doc["synced"]
    # libvirt refuses to define a missing emulator; the daemon re-reads the restored file
    assert synced["how"] == "reloaded" and "qemu-kvm" in synced["note"]
    assert "<emulator>/usr/bin/qemu-kvm</emulator>" in d.inactive_xml("vm1")


def test_running_domain_is_told_about_its_next_cold_start(daemon_root):
    # Debian's /usr/bin/kvm still runs, so a guest using it can be running during the fix.
    d = start_with(daemon_root, {"vm1.xml": bootable(emulator="/usr/bin/kvm")})
    d.virsh("start", "vm1")
    code, out = daemon_root.run("fix", "--connect", d.uri, "--keep-type", "--targets", "x86_64")
    assert code == 0, out
    assert "vm1 is running: the new emulator applies from its next cold start" in out
    assert f"<emulator>{NEW}</emulator>" in d.inactive_xml("vm1")
    assert "<emulator>/usr/bin/kvm</emulator>" in d.virsh("dumpxml", "vm1").stdout
    d.virsh("destroy", "vm1")


def test_no_daemon_is_said(tmp_path, capsys):
    root = Root(tmp_path / "root", capsys)
    root.add("vm1.xml", domain_xml())
    code, out = root.run("fix", "--connect", f"qemu+unix:///session?socket={tmp_path}/none")
    assert code == 0 and "no libvirt daemon reached" in out
    assert f"<emulator>{NEW}</emulator>".encode() in (root.qemu / "vm1.xml").read_bytes()


def test_a_daemon_that_cannot_be_updated_is_an_error_with_the_command(daemon_root):
    # As when the daemon cannot be signalled: no reload after the refused definition.
    no_reload = "import kvmhook.libvirt\nkvmhook.libvirt.reload = lambda uri: False"
    d = start_with(daemon_root, {"vm1.xml": bootable()})
    code, doc = daemon_root.json(
        "fix", "--connect", d.uri, "--targets", "x86_64", prelude=no_reload
    )
    assert code == 1
    (synced,) = doc["synced"]
    assert synced["how"] == "not-updated" and not synced["verified"]
    (f,) = doc["findings"]
    assert (f["kind"], f["severity"]) == ("daemon-not-updated", "error")
    path = daemon_root.qemu / "vm1.xml"
    assert f"virsh -c {d.uri} define {path}" in f["message"]
    # the file is fixed all the same, and the daemon's stale copy is not called fixed
    assert f"<emulator>{NEW}</emulator>" in path.read_text()
    assert "/usr/bin/qemu-kvm" in d.inactive_xml("vm1")


def test_hook_fix_mode_reaches_the_daemon(daemon_root):
    d = start_with(daemon_root, {"vm1.xml": bootable()})
    code, out = daemon_root.run("hook", "--mode", "fix", "--connect", d.uri, "--targets", "x86_64")
    assert code == 0, out
    assert "elog libvirt (" in out and "now holds the file's definition of vm1" in out
    assert f"<emulator>{NEW}</emulator>" in d.inactive_xml("vm1")


# Each file goes only to its own daemon (the 'Safe as root' cases).

DISK = "<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vda'/></disk>"


def look_alike(emulator: str = NEW) -> bytes:
    """A user's file with a daemon guest's name and UUID (both visible in ps) and a host disk."""
    disk = f"    {DISK}\n  </devices>".encode()
    return bootable(emulator=emulator).replace(b"  </devices>", disk)


def test_a_users_config_never_reaches_the_daemon_that_root_talks_to(daemon_root, backend):
    # The session daemon stands in for the system daemon: it holds vm1 with a stale emulator,
    # which is what made a file with vm1's name and UUID look like a fix to it.
    d = start_with(daemon_root, {"vm1.xml": bootable()})
    system_copy = (daemon_root.qemu / "vm1.xml").read_bytes()
    folder = daemon_root.path / "home/mallory/.config/libvirt/qemu"
    folder.mkdir(parents=True)
    (folder / "vm1.xml").write_bytes(look_alike())
    chown_tree(daemon_root.path / "home/mallory", OTHER_UID, OTHER_UID)
    code = main(["fix", "--session", "--connect", d.uri, "--root", str(daemon_root.path), "--json"])
    doc = json.loads(daemon_root.capsys.readouterr().out)
    assert doc["daemon"]["reached"], doc["daemon"]
    assert "/dev/sda" not in d.inactive_xml("vm1")
    assert doc["synced"] == [] and doc["fixed"] == []
    assert (daemon_root.qemu / "vm1.xml").read_bytes() == system_copy
    assert (folder / "vm1.xml").read_bytes() == look_alike()
    assert not [f for f in doc["findings"] if f["kind"] == "daemon-differs"]
    # root leaves the daemon's own folder to its owner too, and says whom to ask
    (stale,) = [f for f in doc["findings"] if f["kind"] == "wrapper-emulator"]
    assert not stale["fixable"] and "as nobody, run: kvmhook fix" in stale["message"]
    assert code == 1


def test_name_and_uuid_do_not_make_a_file_the_daemons(daemon_root):
    d = start_with(daemon_root, {"vm1.xml": bootable()})
    # another tree of the same user, with a file of the same name and UUID
    other = Root(daemon_root.path.parent / "other")
    (other.qemu / "vm1.xml").write_bytes(look_alike())
    chown_tree(other.path, NOBODY.pw_uid, NOBODY.pw_gid)
    user = pwd.getpwnam(USER)
    proc = as_user(
        user.pw_uid, user.pw_gid, "check", "--connect", d.uri, "--root", str(other.path), "--json"
    )
    doc = json.loads(proc.stdout)
    assert doc["daemon"]["reached"]
    assert not [f for f in doc["findings"] if f["kind"] == "daemon-differs"]
    proc = as_user(
        user.pw_uid, user.pw_gid, "fix", "--connect", d.uri, "--root", str(other.path), "--json"
    )
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["synced"] == []
    assert "/dev/sda" not in d.inactive_xml("vm1")
    assert "/usr/bin/qemu-kvm" in d.inactive_xml("vm1")


# Machine types: the qemu here is Debian's 7.2, which has pc-q35-4.1 and pc-q35-7.2.
MACHINES = ("--qemu-version", "10.1.0", "--installed-version", "7.2.0", "--targets", "x86_64")


def on_q35_41() -> bytes:
    return bootable(emulator=NEW).replace(b"machine='pc'", b"machine='pc-q35-4.1'")


def test_fix_machines_with_the_daemon_refuses_a_running_guest_then_moves_it(daemon_root):
    d = start_with(daemon_root, {"vm1.xml": on_q35_41()})
    d.virsh("start", "vm1")
    code, doc = daemon_root.json("check", "--connect", d.uri, *MACHINES)
    (f,) = [f for f in doc["findings"] if f["kind"] == "removed-machine"]
    assert code == 1 and "running now" in f["message"] and f["proposed"] == "pc-q35-7.2"
    code, doc = daemon_root.json("fix", "--machines", "--connect", d.uri, *MACHINES)
    (f,) = [f for f in doc["findings"] if f["kind"] == "removed-machine"]
    assert code == 1 and not f["fixable"] and "shut it down" in f["message"]
    assert (daemon_root.qemu / "vm1.xml").read_bytes() == on_q35_41()
    d.virsh("destroy", "vm1")
    code, doc = daemon_root.json("fix", "--machines", "--connect", d.uri, *MACHINES)
    assert code == 0, doc
    (synced,) = doc["synced"]
    assert synced["how"] == "defined" and synced["verified"]
    assert "machine='pc-q35-7.2'" in d.inactive_xml("vm1")
    assert b"machine='pc-q35-7.2'" in (daemon_root.qemu / "vm1.xml").read_bytes()
    d.virsh("start", "vm1")  # the running daemon's qemu takes the new type
    d.virsh("destroy", "vm1")
    code, doc = daemon_root.json("undo", "--connect", d.uri)
    assert code == 0, doc
    assert "machine='pc-q35-4.1'" in d.inactive_xml("vm1")
    assert b"machine='pc-q35-4.1'" in (daemon_root.qemu / "vm1.xml").read_bytes()
