"""kvmhook runs as root: each way a local user or one odd file could steer or stop it,
reproduced the way it was found, as root, with nobody and a uid of no account as the
other users. (The daemon cases are in test_libvirt.py.)"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import NOBODY, OTHER_UID, Root, chown_tree, domain_xml, run_module

from kvmhook import domains

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="these run as root, as CI does")

NEW = b"/usr/bin/qemu-system-x86_64"


@pytest.fixture
def host(capsys):
    """A ROOT that other users can reach, as a real / is."""
    base = Path(tempfile.mkdtemp(prefix="kvmhook-host-"))
    base.chmod(0o755)
    yield Root(base / "root", capsys)
    shutil.rmtree(base, ignore_errors=True)


def user_folder(r: Root, files: dict[str, bytes], uid: int = OTHER_UID) -> Path:
    """A user's session config folder, all of it the user's."""
    folder = r.path / "home/mallory/.config/libvirt/qemu"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    chown_tree(r.path / "home/mallory", uid, uid)
    return folder


def root_only(r: Root) -> Path:
    """A folder only root may write, shaped like a config folder."""
    secret = r.path / "rootonly"
    (secret / "libvirt/qemu").mkdir(parents=True)
    secret.chmod(0o700)
    return secret


def swap_for_link(r: Root, target: Path) -> None:
    """The user replaces ~/.config with a link."""
    config = r.path / "home/mallory/.config"
    shutil.rmtree(config)
    config.symlink_to(target)
    os.lchown(config, OTHER_UID, OTHER_UID)


def assert_untouched(secret: Path) -> None:
    entries = sorted(str(p.relative_to(secret)) for p in secret.rglob("*"))
    assert entries == ["libvirt", "libvirt/qemu"], entries


def assert_no_user_file_outside_their_home(r: Root) -> None:
    home = r.path / "home/mallory"
    for p in r.path.rglob("*"):
        if p.name.endswith(".tmp"):
            raise AssertionError(f"temporary file left: {p}")
        if p.lstat().st_uid == OTHER_UID:
            assert p == home or home in p.parents, f"{p} belongs to the user"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def by_name(doc: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for f in doc["findings"]:
        found.setdefault(os.path.basename(f["file"]), []).append(f)
    return found


# 2, 3: root never writes where a user has a say, whatever the user swaps, and when.


@pytest.mark.parametrize("when", ["between runs", "during the write"])
def test_3_fix_leaves_nothing_in_a_root_folder_when_the_user_swaps(host, monkeypatch, when):
    mine = host.add("vm.xml", domain_xml("vm"))
    theirs = domain_xml("x")
    folder = user_folder(host, {"x.xml": theirs})
    secret = root_only(host)
    code, doc = host.json("check", "--session")
    (x,) = by_name(doc)["x.xml"]
    assert not x["fixable"] and "as uid 4243, run: kvmhook fix --session" in x["message"]
    if when == "between runs":
        swap_for_link(host, secret)
    else:
        real = os.rename

        def swap_at_the_write(*args, **kw):
            if not (host.path / "home/mallory/.config").is_symlink():
                swap_for_link(host, secret)
            return real(*args, **kw)

        monkeypatch.setattr(os, "rename", swap_at_the_write)
    code, doc = host.json("fix", "--session")
    monkeypatch.undo()
    assert doc["fixed"] == [str(mine)] and NEW in mine.read_bytes()
    assert_untouched(secret)
    assert_no_user_file_outside_their_home(host)
    if when == "during the write":
        assert (host.path / "home/mallory/.config").is_symlink()
    else:
        assert "symbolic link" in by_name(doc)["qemu"][0]["message"]
    assert folder.exists() or (host.path / "home/mallory/.config").is_symlink()


def test_2_undo_never_writes_through_a_link_below_a_home(host):
    mine = host.add("vm.xml", domain_xml("vm"))
    theirs = domain_xml("x")
    folder = user_folder(host, {"x.xml": theirs})
    code, doc = host.json("fix", "--session")
    assert doc["fixed"] == [str(mine)] and (folder / "x.xml").read_bytes() == theirs
    # What an older kvmhook recorded after fixing the user's file as root.
    run = Path(doc["backup"])
    fixed = theirs.replace(b"/usr/bin/qemu-kvm", NEW)
    (folder / "x.xml").write_bytes(fixed)
    (run / "00001.orig").write_bytes(theirs)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["entries"].append(
        {
            "path": "home/mallory/.config/libvirt/qemu/x.xml",
            "backup": "00001.orig",
            "sha256": sha(theirs),
            "new_sha256": sha(fixed),
            "meta": {"mode": 0o600, "uid": 0, "gid": 0, "mtime_ns": 0, "xattrs": {}},
        }
    )
    (run / "manifest.json").write_text(json.dumps(manifest))
    secret = root_only(host)
    swap_for_link(host, secret)
    code, doc = host.json("undo")
    assert code == 1 and doc["fixed"] == [str(mine)] and b"qemu-kvm" in mine.read_bytes()
    (refusal,) = doc["findings"]
    assert refusal["kind"] == "undo-refused"
    assert f"its original is kept in {run}/00001.orig" in refusal["message"]
    assert_untouched(secret)
    assert_no_user_file_outside_their_home(host)


# 4: any declared encoding, or any exception on one file, is a finding on that file.

ENCODINGS = ["Shift_JIS", "EUC-JP", "GB2312", "Big5", "EUC-KR", "UTF-7", "x-no-such-encoding"]


def test_4_any_declared_encoding_is_one_finding_and_the_run_goes_on(root):
    good = root.add("good.xml", domain_xml("good"))
    for enc in ENCODINGS:
        head = f'<?xml version="1.0" encoding="{enc}"?>\n'.encode()
        root.add(f"{enc}.xml", head + domain_xml(enc, emulator=NEW.decode()))
    code, doc = root.json("check")
    assert code == 1
    found = by_name(doc)
    for enc in ENCODINGS:
        (f,) = found[f"{enc}.xml"]
        assert (f["kind"], f["severity"]) == ("unparsable", "warning")
        assert "encoding" in f["message"]
    code, out = root.run("hook", "--mode", "explain")
    assert code == 3 and all(f"{enc}.xml" in out for enc in ENCODINGS)
    code, doc = root.json("fix")
    assert code == 0 and doc["fixed"] == [str(good)]


def test_4_an_exception_on_one_file_is_a_finding_on_that_file(root, monkeypatch):
    from kvmhook import rules

    def explode(config, facts):
        if config.name == "bad.xml":
            raise RuntimeError("boom")
        return iter(())

    monkeypatch.setattr(rules, "CHECKS", [explode, *rules.CHECKS])
    good = root.add("good.xml", domain_xml("good"))
    root.add("bad.xml", domain_xml("bad"))
    code, doc = root.json("fix")
    assert doc["fixed"] == [str(good)]
    (f,) = by_name(doc)["bad.xml"]
    assert f["kind"] == "unparsable" and "RuntimeError: boom" in f["message"]
    assert f["severity"] == "error"  # the ebuild's grep matches it


# 5: a planted file stalls nothing, and root reads nothing through a user's link.


def test_5_planted_files_cannot_stall_the_run_or_leak_root_only_files(host):
    secret = host.path / "root-only.txt"
    secret.write_bytes(b"TOPSECRET /usr/bin/qemu-kvm\n")
    secret.chmod(0o600)
    folder = user_folder(host, {})
    for name, target in (("pagemap.xml", "/proc/self/pagemap"), ("leak.xml", str(secret))):
        (folder / name).symlink_to(target)
        os.lchown(folder / name, OTHER_UID, OTHER_UID)
    os.link(secret, folder / "hard.xml")  # a hard link keeps the file root's
    sparse = host.qemu / "sparse.xml"
    with open(sparse, "wb") as f:
        f.truncate(15 << 40)
    (host.qemu / "pagemap.xml").symlink_to("/proc/self/pagemap")  # root's own link
    proc = run_module("check", "--session", "--root", str(host.path), "--json", timeout=300)
    doc = json.loads(proc.stdout)
    found = by_name(doc)
    assert "TOPSECRET" not in proc.stdout
    for name in ("pagemap.xml", "leak.xml"):
        user_side = [f for f in found[name] if str(folder) in f["file"]]
        assert [f["kind"] for f in user_side] == ["not-a-file"], user_side
    (hard,) = found["hard.xml"]
    assert hard["kind"] == "unreadable" and "not by the folder's owner" in hard["message"]
    (big,) = found["sparse.xml"]
    assert big["kind"] == "unparsable" and "larger than 16 MiB" in big["message"]
    system_pagemap = [f for f in found["pagemap.xml"] if str(host.qemu) in f["file"]]
    assert [f["kind"] for f in system_pagemap] == ["not-a-file"]


# 6: nothing is opened by a name that can change between a look and an open.


class OpenWatch:
    """inotify's IN_OPEN on one path: whether anything opened it."""

    def __init__(self, path: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0 and self.libc.inotify_add_watch(self.fd, bytes(path), 0x20) >= 0

    def opened(self) -> bool:
        try:
            return bool(os.read(self.fd, 4096))
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self.fd)


@pytest.mark.single_scan  # it swaps a link during the scan
def test_6_a_device_behind_a_link_is_never_opened(root, monkeypatch):
    device = root.path / "device"
    os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    target = root.path / "target.xml"
    target.write_bytes(domain_xml("t"))
    link = root.qemu / "link.xml"
    link.symlink_to(target)
    watch = OpenWatch(device)
    real = domains.reopen
    swapped = []

    def swap_then_reopen(pinned, name, dir_fd, *rest):
        # the link turns to the device between the look at the target and its read
        if not swapped:
            (root.qemu / ".next").symlink_to(device)
            os.rename(root.qemu / ".next", link)
            swapped.append(True)
        return real(pinned, name, dir_fd, *rest)

    monkeypatch.setattr(domains, "reopen", swap_then_reopen)
    code, doc = root.json("check")
    assert swapped and os.readlink(link) == str(device)
    kinds = [f["kind"] for f in by_name(doc)["link.xml"]]
    assert kinds == ["not-a-file", "grep-match"]  # the file it pointed to was what was read
    monkeypatch.undo()
    for _ in range(3):  # and with the link on the device from the start
        code, doc = root.json("fix")
        assert [f["kind"] for f in by_name(doc)["link.xml"]] == ["not-a-file"]
    assert not watch.opened(), "the device was opened"
    watch.close()


@pytest.mark.single_scan  # it swaps an entry during the scan
def test_6_a_users_regular_file_swapped_for_a_device_is_never_opened(host, monkeypatch):
    # Only in folders that root (or the invoker) alone can change is a regular entry opened
    # directly; in a user's folder the entry is pinned first, whatever the listing said.
    folder = user_folder(host, {"vm.xml": domain_xml("vm")})
    os.mknod(folder / ".next", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a device node
    watch = OpenWatch(folder / ".next")  # inotify watches the node, whatever its name
    real = domains.entries

    def listed_then_swapped(folders):
        found = real(folders)
        assert [(f.why is None, n, regular) for f, n, regular in found] == [(False, "vm.xml", True)]
        os.rename(folder / ".next", folder / "vm.xml")  # where the listing saw a file
        return found

    monkeypatch.setattr(domains, "entries", listed_then_swapped)
    code, doc = host.json("check", "--session")
    assert [f["kind"] for f in by_name(doc)["vm.xml"]] == ["not-a-file"]
    assert not watch.opened(), "the device was opened"
    watch.close()


# 7: undo trusts neither the manifest nor a state folder someone else can steer.


def _tamper(entry: dict, how: str) -> None:
    if how == "absolute path":
        entry["path"] = "/" + entry["path"]
    elif how == "dot-dot":
        entry["path"] = "etc/libvirt/qemu/../../../outside.xml"
    elif how == "absolute backup":
        entry["backup"] = "/etc/shadow"
    elif how == "backup in another run":
        entry["backup"] = "../other/00000.orig"
    elif how == "setuid mode":
        entry["meta"]["mode"] = 0o4755
    elif how == "not a config folder":
        entry["path"] = "etc/cron.d/vm.xml"


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("absolute path", "not relative"),
        ("dot-dot", "'..'"),
        ("absolute backup", "outside its run folder"),
        ("backup in another run", "outside its run folder"),
        ("setuid mode", "beyond the permission bits"),
        ("not a config folder", "not in a config folder"),
    ],
)
def test_7_undo_refuses_a_tampered_manifest(root, how, why):
    vm = root.add("vm.xml", domain_xml())
    _, doc = root.json("fix")
    run = Path(doc["backup"])
    manifest = json.loads((run / "manifest.json").read_text())
    _tamper(manifest["entries"][0], how)
    (run / "manifest.json").write_text(json.dumps(manifest))
    fixed = vm.read_bytes()
    before = {p for p in root.path.rglob("*") if "kvmhook" not in str(p)}
    code, doc = root.json("undo")
    assert code == 1
    (refusal,) = doc["findings"]
    assert refusal["kind"] == "undo-refused" and why in refusal["message"]
    assert str(run) in refusal["message"]  # where the original is, to restore by hand
    assert vm.read_bytes() == fixed
    assert {p for p in root.path.rglob("*") if "kvmhook" not in str(p)} == before
    assert not (root.path.parent / "outside.xml").exists()


@pytest.mark.parametrize("how", ["link", "group-writable parent", "another owner", "user parent"])
def test_7_the_state_folder_is_trusted_or_refused(root, how):
    vm = root.add("vm.xml", domain_xml())
    lib = root.path / "var/lib"
    lib.mkdir(parents=True)
    if how == "link":
        elsewhere = root.path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        (lib / "kvmhook").symlink_to(elsewhere)
    elif how == "group-writable parent":
        lib.chmod(0o775)
    elif how == "another owner":
        (lib / "kvmhook").mkdir(mode=0o700)
        os.chown(lib / "kvmhook", OTHER_UID, OTHER_UID)
    else:
        os.chown(lib, OTHER_UID, OTHER_UID)
    code, _ = root.run("fix")
    assert code == 2 and len(root.err.splitlines()) == 1
    assert root.err.startswith("kvmhook: refusing the state folder")
    assert vm.read_bytes() == domain_xml()
    assert not any(p.name != "kvmhook" and "kvmhook" in str(p) for p in lib.rglob("*"))


def test_7_the_state_folder_is_made_private_under_plain_parents(root):
    root.add("vm.xml", domain_xml())
    assert root.run("fix")[0] == 0
    for rel, mode in (("var", 0o755), ("var/lib", 0o755), ("var/lib/kvmhook", 0o700)):
        st = (root.path / rel).lstat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == mode and st.st_uid == 0


# 8: check says fixable exactly when fix fixes it.


@pytest.mark.parametrize(
    "extra",
    [
        "  <description>" + "a" * (11 * 1024 * 1024) + "</description>\n",
        "  <metadata>" + "<a>" * 300 + "</a>" * 300 + "</metadata>\n",
        "",
    ],
    ids=["text over 10 MB", "nesting over 256", "plain"],
)
def test_8_check_and_fix_agree(root, extra):
    data = domain_xml(extra=extra)
    vm = root.add("vm.xml", data)
    _, check = root.json("check")
    (said,) = [f for f in check["findings"] if f["kind"] == "wrapper-emulator"]
    root.json("fix")
    assert said["fixable"] == (vm.read_bytes() != data)
    # the verification reads what the scan reads: no size or depth limit of another parser
    assert said["fixable"] and vm.read_bytes() == data.replace(
        b"/usr/bin/qemu-kvm", b"/usr/bin/qemu-system-x86_64"
    )


# 9: one refused file never blocks the rest of its run, nor older runs.


def test_9_undo_is_never_stuck_and_names_the_backup(root):
    vm1 = root.add("vm1.xml", domain_xml("vm1"))
    _, first = root.json("fix")
    vm2 = root.add("vm2.xml", domain_xml("vm2"))
    vm3 = root.add("vm3.xml", domain_xml("vm3"))
    _, second = root.json("fix")
    assert first["backup"] != second["backup"]
    vm2.write_bytes(vm2.read_bytes() + b"<!-- edited by hand -->\n")
    code, doc = root.json("undo")
    assert code == 1 and doc["backup"] == second["backup"] and doc["fixed"] == [str(vm3)]
    (refusal,) = doc["findings"]
    backup = f"{second['backup']}/00000.orig"
    assert refusal["file"] == str(vm2) and backup in refusal["message"]
    assert Path(backup).read_bytes() == domain_xml("vm2")  # the user can restore it by hand
    code, doc = root.json("undo")  # the older run comes next
    assert code == 0 and doc["backup"] == first["backup"] and vm1.read_bytes() == domain_xml("vm1")
    code, listed = root.json("undo", "--list")
    runs = {r["id"]: r for r in listed["runs"]}
    held = [e for e in runs[os.path.basename(second["backup"])]["entries"] if not e["restored"]]
    assert [(e["file"], e["backup"]) for e in held] == [(str(vm2), backup)]
    code, out = root.run("undo", "--list")
    assert f"{vm2} <- {backup}" in out
    # put the hand edit back to what fix wrote, and undo that run again by its ID
    vm2.write_bytes(domain_xml("vm2").replace(b"/usr/bin/qemu-kvm", NEW))
    code, doc = root.json("undo", "--run", os.path.basename(second["backup"]))
    assert code == 0 and doc["fixed"] == [str(vm2)] and vm2.read_bytes() == domain_xml("vm2")
    code, _ = root.run("undo", "--run", "no-such-run")
    assert code == 2 and "no backup run" in root.err
    code, _ = root.run("undo", "--run", "../../etc")
    assert code == 2


# 11: two runs that start together, on a root where neither made the state folder yet.


def test_11_simultaneous_first_fixes_never_fail(tmp_path):
    for i in range(100):
        r = Root(tmp_path / f"r{i}")
        for j in range(3):
            r.add(f"vm{j}.xml", domain_xml(f"vm{j}"))
        cmd = [sys.executable, "-m", "kvmhook", "fix", "--root", str(r.path), "--json"]
        pair = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        results = [p.communicate(timeout=120) for p in pair]
        for p, (_, err) in zip(pair, results, strict=True):
            assert p.returncode == 0, f"pair {i}: {err}"
        fixed = [set(json.loads(out)["fixed"]) for out, _ in results]
        assert fixed[0].isdisjoint(fixed[1]) and len(fixed[0] | fixed[1]) == 3


# 12: names cannot add lines to the output or reach the terminal as escape sequences.

SPOOF = "vm\n * ERROR: spoofed line \\e[7mMARK"


def test_12_names_cannot_spoof_lines(root):
    name = "odd\x1b[2J\n.xml"
    root.add(name, domain_xml(SPOOF))
    code, out = root.run("check")
    assert code == 1 and "\x1b" not in out
    assert not any(line.startswith(" * ERROR: spoofed") for line in out.splitlines())
    assert "odd\\x1b[2J\\n.xml" in out and "vm\\n * ERROR: spoofed" in out
    code, out = root.run("hook", "--mode", "explain")
    assert code == 3 and "\x1b" not in out
    for line in out.splitlines():
        assert line.split(" ", 1)[0] in ("eerror", "ewarn", "elog", "einfo"), line
    # portage's eerror runs echo -e: a backslash reaches it doubled, and prints as itself
    assert "\\\\e[7mMARK" in out and "odd\\\\x1b[2J\\\\n.xml" in out
    echoed = subprocess.run(
        ["bash", "-c", 'echo -e "$1"', "-", out], capture_output=True, text=True, check=True
    ).stdout
    assert "\x1b" not in echoed and "\\e[7mMARK" in echoed


# 13: the hook's Python is isolated, and no production code reads a test setting.


def test_13_no_test_setting_in_production_code():
    src = Path(domains.__file__).parent
    for path in src.glob("*.py"):
        assert "KVMHOOK_TEST" not in path.read_text(), path


# 14: install-hook writes through a symlinked bashrc and keeps every byte.


def test_14_install_hook_through_a_link_keeps_the_target_and_its_bytes(tmp_path):
    root = tmp_path / "root"
    portage = root / "etc/portage"
    portage.mkdir(parents=True)
    target = portage / "bashrc.real"
    original = b"# caf\xe9 \xff\xfe not UTF-8\nexport A=1"
    target.write_bytes(original)
    target.chmod(0o640)
    (portage / "bashrc").symlink_to("bashrc.real")
    proc = run_module("install-hook", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert (portage / "bashrc").is_symlink()
    data = target.read_bytes()
    assert data.startswith(original + b"\n") and data.count(b"added by kvmhook") == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert run_module("uninstall-hook", "--root", str(root)).returncode == 0
    assert target.read_bytes() == original + b"\n" and (portage / "bashrc").is_symlink()


def test_a_user_fixes_their_own_folder_as_themselves(host):
    """What root tells the user to run works, as that user, with its state in their home."""
    stale = domain_xml("x")
    user_folder(host, {"x.xml": stale}, uid=NOBODY.pw_uid)
    home = host.path / "home/mallory"
    chown_tree(home, NOBODY.pw_uid, NOBODY.pw_gid)
    # nobody's passwd home is /nonexistent: give the run a home under ROOT through the
    # state rule's other branch, a tree of the user's own
    os.chown(host.path, NOBODY.pw_uid, NOBODY.pw_gid)
    from conftest import as_user

    proc = as_user(
        NOBODY.pw_uid, NOBODY.pw_gid, "fix", "--session", "--root", str(host.path), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["fixed"] == [str(home / ".config/libvirt/qemu/x.xml")]
    assert (home / ".config/libvirt/qemu/x.xml").stat().st_uid == NOBODY.pw_uid
    state = host.path / "var/lib/kvmhook"
    assert state.stat().st_uid == NOBODY.pw_uid
    proc = as_user(NOBODY.pw_uid, NOBODY.pw_gid, "undo", "--root", str(host.path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert (home / ".config/libvirt/qemu/x.xml").read_bytes() == stale


@pytest.fixture
def account(host):
    """A real user account whose home is ROOT/home/kvmhook-test on the test's host."""
    name, uid = "kvmhook-test", 4244
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(
        [
            "useradd",
            "--no-create-home",
            "--home-dir",
            "/home/" + name,
            "--uid",
            str(uid),
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield name, uid
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_a_user_on_a_system_root_keeps_the_state_in_their_home(host, account):
    name, uid = account
    import grp

    gid = grp.getgrnam(name).gr_gid
    home = host.path / "home" / name
    folder = home / ".config/libvirt/qemu"
    folder.mkdir(parents=True)
    stale = domain_xml("x")
    (folder / "x.xml").write_bytes(stale)
    chown_tree(home, uid, gid)
    mine = host.add("vm.xml", domain_xml("vm"))  # root's: the user leaves it alone
    from conftest import as_user

    proc = as_user(uid, gid, "fix", "--session", "--root", str(host.path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["fixed"] == [str(folder / "x.xml")]
    assert mine.read_bytes() == domain_xml("vm")
    state = home / ".local/state/kvmhook"
    assert state.stat().st_uid == uid and stat.S_IMODE(state.stat().st_mode) == 0o700
    assert not (host.path / "var/lib/kvmhook").exists()
    proc = as_user(uid, gid, "undo", "--root", str(host.path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert (folder / "x.xml").read_bytes() == stale
