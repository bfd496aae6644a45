"""fix and undo: backups, manifest, lock, metadata, and the CLI's contract."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import domain_xml, run_module

from kvmhook import store
from kvmhook.__main__ import main

NEW = b"/usr/bin/qemu-system-x86_64"


def test_check_writes_nothing(root):
    root.add("vm.xml", domain_xml())
    root.add("qemu.xml", domain_xml(dtype="qemu"))
    before = root.snapshot()
    code, out = root.run("check")
    assert code == 1 and "vm.xml" in out
    assert root.snapshot() == before


def test_fix_backs_up_outside_the_config_folder(root):
    original = domain_xml()
    path = root.add("vm.xml", original, mode=0o640)
    code, doc = root.json("fix")
    assert code == 0 and doc["fixed"] == [str(path)]
    assert path.read_bytes() == original.replace(b"/usr/bin/qemu-kvm", NEW)
    assert sorted(p.name for p in root.qemu.iterdir()) == ["vm.xml"]
    run = doc["backup"]
    assert run.startswith(str(root.path / "var/lib/kvmhook/backups/"))
    for folder in (root.path / "var/lib/kvmhook", root.path / "var/lib/kvmhook/backups", run):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    manifest = json.loads((root.path / run / "manifest.json").read_text())
    (entry,) = manifest["entries"]
    assert entry["path"] == "etc/libvirt/qemu/vm.xml"
    assert entry["sha256"] == store.sha256(original)
    assert entry["new_sha256"] == store.sha256(path.read_bytes())
    assert entry["meta"]["mode"] == 0o640
    backup = os.path.join(run, entry["backup"])
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert Path(backup).read_bytes() == original
    assert not any(name.endswith(".xml") for name in os.listdir(run))


def test_fix_reports_what_it_changed(root):
    root.add("vm.xml", domain_xml(dtype="qemu"))
    code, out = root.run("fix")
    assert code == 0
    assert "Fixed" in out and "/usr/bin/qemu-kvm -> /usr/bin/qemu-system-x86_64" in out
    assert "type='qemu' -> type='kvm'" in out
    assert f"kvmhook undo --root {root.path}" in out


def test_keep_type(root):
    path = root.add("vm.xml", domain_xml(dtype="qemu"))
    code, _ = root.run("fix", "--keep-type")
    assert code == 0
    assert path.read_bytes() == domain_xml(dtype="qemu", emulator=NEW.decode())


def test_dry_run_prints_the_diff_and_writes_nothing(root):
    root.add("vm.xml", domain_xml())
    before = root.snapshot()
    code, out = root.run("fix", "--dry-run")
    assert code == 1
    assert "-    <emulator>/usr/bin/qemu-kvm</emulator>" in out
    assert "+    <emulator>/usr/bin/qemu-system-x86_64</emulator>" in out
    assert root.snapshot() == before


def test_second_fix_finds_nothing_and_writes_nothing(root):
    root.add("vm.xml", domain_xml())
    assert root.run("fix")[0] == 0
    before = root.snapshot()
    code, doc = root.json("fix")
    assert (code, doc["findings"], doc["fixed"], doc["backup"]) == (0, [], [], None)
    assert root.snapshot() == before


def test_nothing_to_fix_creates_no_state(root):
    root.add("vm.xml", domain_xml(emulator="/usr/bin/qemu-system-x86_64"))
    assert root.run("fix")[0] == 0
    assert not (root.path / "var").exists()


def test_unfixable_findings_exit_1_and_the_rest_is_fixed(root):
    good = root.add("a.xml", domain_xml())
    bad = root.add("b.xml", domain_xml(arch="s390x"))
    code, doc = root.json("fix")
    assert code == 1
    assert doc["fixed"] == [str(good)]
    assert {f["file"] for f in doc["findings"]} == {str(bad)}
    assert [(f["kind"], f["fixable"]) for f in doc["findings"]] == [("wrapper-emulator", False)]


def test_metadata_is_kept_and_restored(root):
    path = root.add("vm.xml", domain_xml(), mode=0o600)
    os.setxattr(path, "user.kvmhook.test", b"label")
    if os.geteuid() == 0:
        os.chown(path, 1234, 2345)
    owner = (os.stat(path).st_uid, os.stat(path).st_gid)
    old_mtime = os.stat(path).st_mtime_ns
    assert root.run("fix")[0] == 0
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == owner
    assert os.getxattr(path, "user.kvmhook.test") == b"label"
    assert root.run("undo")[0] == 0
    st = os.stat(path)
    assert path.read_bytes() == domain_xml()
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == owner
    assert os.getxattr(path, "user.kvmhook.test") == b"label"
    assert st.st_mtime_ns == old_mtime


def test_undo_refuses_a_file_changed_since(root):
    a = root.add("a.xml", domain_xml("a"))
    b = root.add("b.xml", domain_xml("b"))
    assert root.run("fix")[0] == 0
    edited = b.read_bytes().replace(b"1048576", b"2097152")
    b.write_bytes(edited)
    code, doc = root.json("undo")
    assert code == 1
    assert doc["fixed"] == [str(a)] and a.read_bytes() == domain_xml("a")
    (refusal,) = doc["findings"]
    assert refusal["file"] == str(b) and refusal["kind"] == "undo-refused"
    assert "changed since" in refusal["message"]
    assert b.read_bytes() == edited


def test_undo_goes_back_run_by_run(root):
    a = root.add("a.xml", domain_xml("a"))
    assert root.run("fix")[0] == 0
    b = root.add("b.xml", domain_xml("b"))
    assert root.run("fix")[0] == 0
    assert root.json("undo")[1]["fixed"] == [str(b)]
    assert root.json("undo")[1]["fixed"] == [str(a)]
    code, out = root.run("undo")
    assert code == 0 and "Nothing to undo" in out
    assert a.read_bytes() == domain_xml("a") and b.read_bytes() == domain_xml("b")


def test_lock_serialises_fix_runs(root):
    path = root.add("vm.xml", domain_xml())
    state = store.open_state(str(root.path), create=True)
    with store.lock(state):
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvmhook", "fix", "--root", str(root.path), "--json"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        assert proc.poll() is None, "fix ran while another run held the lock"
        assert b"/usr/bin/qemu-kvm" in path.read_bytes()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and json.loads(out)["fixed"] == [str(path)]


def test_json_schema(root):
    root.add("vm.xml", domain_xml())
    code, doc = root.json("check")
    assert code == 1
    keys = {"schema", "root", "findings", "fixed", "backup", "daemon", "merge", "scanned"}
    assert set(doc) == keys
    assert doc["daemon"]["reached"] is False and doc["daemon"]["uri"] is None
    # not a Gentoo root: the merge is unknown, and the binaries in ROOT/usr/bin decide
    assert doc["merge"] == {
        "installed": [],
        "pending": None,
        "targets": None,
        "source": "ROOT/usr/bin",
    }
    assert doc["scanned"] == [{"folder": str(root.qemu), "configs": 1}]
    assert doc["schema"] == 1 and doc["root"] == str(root.path)
    (f,) = doc["findings"]
    assert set(f) == {
        "file",
        "line",
        "domain",
        "kind",
        "severity",
        "fixable",
        "current",
        "proposed",
        "message",
    }
    assert os.path.isabs(f["file"]) and isinstance(f["line"], int)


@pytest.mark.parametrize(
    "args",
    [["check", "--root", "/nonexistent/kvmhook"], ["check", "--targets", "x86_64;rm"], ["frob"]],
)
def test_bad_arguments_exit_2_with_one_line(args):
    proc = run_module(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith(("kvmhook:", "usage:", "kvmhook: error"))


def test_bad_root_reason_is_one_line():
    proc = run_module("fix", "--root", "/nonexistent/kvmhook")
    assert proc.stderr == "kvmhook: --root: /nonexistent/kvmhook is not a folder\n"


def test_colour_only_on_a_tty_and_never_with_no_color(root):
    import pty

    root.add("vm.xml", domain_xml())

    def on_tty(env):
        pid, fd = pty.fork()
        if pid == 0:
            os.environ.clear()
            os.environ.update(env)
            os.execv(
                sys.executable, [sys.executable, "-m", "kvmhook", "check", "--root", str(root.path)]
            )
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.waitpid(pid, 0)
        return b"".join(chunks)

    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    assert b"\x1b[31;01m*" in on_tty(env)
    assert b"\x1b[" not in on_tty(dict(env, NO_COLOR="1"))
    assert "\x1b[" not in run_module("check", "--root", str(root.path)).stdout


def test_targets_accept_portage_spelling(root):
    root.add("vm.xml", domain_xml(arch="aarch64", emulator="/usr/bin/qemu-system-aarch64"))
    assert root.run("check", "--targets", "x86_64 aarch64")[0] == 0
    assert root.run("check", "--targets", "x86_64,aarch64")[0] == 0
    assert root.run("check", "--targets", "x86_64")[0] == 1


def test_nothing_scanned_is_never_an_all_clear(tmp_path, capsys):
    from conftest import Root

    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["check", "--root", str(empty)])
    out = capsys.readouterr().out
    assert "Read no domain configs" in out
    assert f"{empty}/etc/libvirt/qemu does not exist" in out and "[missing-folder]" in out
    assert "No stale emulator references found." not in out and code == 0
    # the common slip: the config folder given as --root
    r = Root(tmp_path / "root", capsys)
    r.add("vm.xml", domain_xml())
    main(["check", "--root", str(r.qemu)])
    out = capsys.readouterr().out
    assert "--root takes the system's root folder (such as /), not the config folder" in out


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("", "--targets: empty"),
        ("x8664", "did you mean x86_64?"),
        ("qemu_softmmu_targets_x86_64", "did you mean x86_64?"),
        ("aarch46", "did you mean aarch64?"),
        ("X86-64", "not a QEMU softmmu target name"),
    ],
)
def test_targets_take_only_qemu_target_names(root, value, said):
    root.add("vm.xml", domain_xml())
    code, _ = root.run("check", "--targets", value)
    assert code == 2 and said in root.err and len(root.err.splitlines()) == 1


def test_version(capsys):
    from kvmhook import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"kvmhook {__version__}\n"
