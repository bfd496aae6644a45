"""Discovery, and files that must not hurt: hostile, broken or not files at all."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import NOBODY, OTHER_UID, chown_tree, domain_xml, line_of, needs_root, run_module

SECRET = "TOPSECRET-7f3a9c"


def kinds(doc: dict, name: str) -> list[tuple[str, str]]:
    return [(f["kind"], f["severity"]) for f in doc["findings"] if f["file"].endswith(name)]


def test_only_top_level_xml_entries_are_configs(root):
    root.add("vm1.xml", domain_xml())
    for sub in ("autostart", "networks"):
        (root.qemu / sub).mkdir()
        (root.qemu / sub / "vm1.xml").write_bytes(domain_xml())
    root.add("notes.txt", b"/usr/bin/qemu-kvm")
    code, doc = root.json("check")
    assert code == 1
    assert {f["file"] for f in doc["findings"]} == {str(root.qemu / "vm1.xml")}


def test_hidden_files_are_configs_libvirt_loads_but_the_ebuild_does_not_grep(root):
    extra = "  <description>/usr/bin/qemu-kvm</description>\n"
    hidden = root.add(".hidden.xml", domain_xml(extra=extra))
    code, doc = root.json("fix")
    assert code == 0 and doc["fixed"] == [str(hidden)]
    assert doc["findings"] == []
    assert b"<description>/usr/bin/qemu-kvm</description>" in hidden.read_bytes()


@needs_root
def test_session_folders(root):
    alice = root.path / "home/alice/.config/libvirt/qemu"
    admin = root.path / "root/.config/libvirt/qemu"
    for folder in (alice, admin):
        folder.mkdir(parents=True)
        (folder / "vm.xml").write_bytes(domain_xml())
    chown_tree(root.path / "home/alice", NOBODY.pw_uid, NOBODY.pw_gid)
    # a user's link would make root read or write wherever it points
    (root.path / "home/mallory").mkdir()
    (root.path / "home/mallory/.config").symlink_to(root.path / "home/alice/.config")
    os.lchown(root.path / "home/mallory", OTHER_UID, OTHER_UID)
    os.lchown(root.path / "home/mallory/.config", OTHER_UID, OTHER_UID)
    _, without = root.json("check")
    assert without["findings"] == []
    code, doc = root.json("check", "--session")
    assert code == 1
    by_file = {f["file"]: f for f in doc["findings"]}
    assert set(by_file) == {
        str(alice / "vm.xml"),
        str(admin / "vm.xml"),
        str(root.path / "home/mallory/.config/libvirt/qemu"),
    }
    # root fixes its own session folder, and only checks the user's
    assert by_file[str(admin / "vm.xml")]["fixable"]
    user = by_file[str(alice / "vm.xml")]
    assert not user["fixable"] and "as nobody, run: kvmhook fix --session" in user["message"]
    link = by_file[str(root.path / "home/mallory/.config/libvirt/qemu")]
    assert (link["kind"], link["severity"]) == ("unreadable", "warning")
    assert "symbolic link" in link["message"]


def test_symlink_is_a_warning_and_never_written_through(root, tmp_path):
    outside = tmp_path / "outside.xml"
    outside.write_bytes(domain_xml())
    link = root.qemu / "linked.xml"
    link.symlink_to(outside)
    code, doc = root.json("fix")
    assert ("not-a-file", "warning") in kinds(doc, "linked.xml")
    # the ebuild's grep follows the link, so its match is still an error
    assert ("grep-match", "error") in kinds(doc, "linked.xml")
    assert code == 1 and doc["fixed"] == []
    assert link.is_symlink() and outside.read_bytes() == domain_xml()


def test_fifo_does_not_hang(root):
    os.mkfifo(root.qemu / "pipe.xml")
    root.add("vm.xml", domain_xml())
    proc = run_module("fix", "--root", str(root.path), "--json", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert '"not-a-file"' in proc.stdout and "pipe.xml" in proc.stdout
    assert (root.qemu / "pipe.xml").is_fifo()


def test_folder_named_xml(root):
    (root.qemu / "x.xml").mkdir()
    code, doc = root.json("fix")
    assert code == 0 and kinds(doc, "x.xml") == [("not-a-file", "warning")]


def test_billion_laughs_is_named_and_never_expanded(root):
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    data = (
        f'<?xml version="1.0"?>\n<!DOCTYPE domain [<!ENTITY l0 "lol">{lol}]>\n'
        "<domain type='kvm'><name>&l9;</name><devices>"
        "<emulator>/usr/bin/qemu-kvm</emulator></devices></domain>\n"
    ).encode()
    path = root.add("bomb.xml", data)
    proc = run_module("fix", "--root", str(root.path), timeout=60)
    assert proc.returncode == 1
    # libxml2 may already refuse the amplification; either way it is named, never expanded
    assert "bomb.xml" in proc.stdout and "[unparsable]" in proc.stdout
    assert "lollollol" not in proc.stdout
    assert path.read_bytes() == data


def test_external_entity_content_never_appears(root, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    data = (
        f"<!DOCTYPE domain [<!ENTITY s SYSTEM 'file://{secret}'>]>\n"
        "<domain type='kvm'><name>&s;</name><description>&s;</description>"
        "<devices><emulator>/usr/bin/qemu-kvm</emulator></devices></domain>\n"
    ).encode()
    path = root.add("xxe.xml", data)
    root.add("good.xml", domain_xml())
    outputs = []
    for command in ("check", "fix"):
        for extra in ([], ["--json"]):
            proc = run_module(command, "--root", str(root.path), *extra)
            outputs.append(proc.stdout + proc.stderr)
    assert all(SECRET not in out for out in outputs)
    assert "declares entities" in outputs[0]
    assert path.read_bytes() == data
    for dirpath, _, files in os.walk(root.path):
        for name in files:
            assert SECRET.encode() not in Path(dirpath, name).read_bytes()


def test_truncated_and_empty_files(root):
    whole = domain_xml()
    cut_before = whole[: whole.index(b"<devices>")]
    cut_after = whole[: whole.index(b"</emulator>") + 11]
    root.add("early.xml", cut_before)
    root.add("late.xml", cut_after)
    root.add("empty.xml", b"")
    before = root.snapshot()
    code, doc = root.json("fix")
    assert kinds(doc, "early.xml") == [("unparsable", "warning")]
    # the ebuild's grep matches the damaged file: an error, with the line it trips on
    assert kinds(doc, "late.xml") == [("unparsable", "error"), ("grep-match", "error")]
    (line,) = [f["line"] for f in doc["findings"] if f["kind"] == "grep-match"]
    assert line == line_of(cut_after, b"<emulator>")
    (empty,) = [f for f in doc["findings"] if f["file"].endswith("empty.xml")]
    assert (empty["kind"], empty["severity"]) == ("unparsable", "warning")
    assert "empty" in empty["message"]
    assert "not well-formed" in doc["findings"][0]["message"]
    assert code == 1 and root.snapshot() == before


def test_not_a_domain_is_left_alone(root):
    root.add("net.xml", b"<network><name>default</name></network>\n")
    code, doc = root.json("check")
    assert code == 0 and kinds(doc, "net.xml") == [("not-a-domain", "warning")]


def test_bom_and_crlf_through_the_cli(root):
    data = b"\xef\xbb\xbf" + domain_xml().replace(b"\n", b"\r\n")
    path = root.add("win.xml", data)
    code, _ = root.run("fix")
    assert code == 0
    assert path.read_bytes() == data.replace(b"/usr/bin/qemu-kvm", b"/usr/bin/qemu-system-x86_64")


def test_oversized_file_is_not_parsed_and_read_only_up_to_the_cap(root, monkeypatch):
    from kvmhook import domains

    monkeypatch.setattr(domains, "MAX_SIZE", 4096)
    data = b"<domain>\n/usr/bin/qemu-kvm\n" + b"x\n" * 5000 + b"/usr/bin/qemu-kvm\n</domain>"
    root.add("huge.xml", data)
    root.add("huger.xml", b"<domain>" + b"x\n" * 5000 + b"/usr/bin/qemu-kvm\n</domain>")
    code, doc = root.json("check")
    assert code == 1
    # the mention within the cap is found; the one past it is not read, yet the file is
    # still an error: the ebuild's grep reads all of it
    assert kinds(doc, "huge.xml") == [("unparsable", "error"), ("grep-match", "error")]
    assert [f["line"] for f in doc["findings"] if f["file"].endswith("huge.xml")] == [None, 2]
    assert kinds(doc, "huger.xml") == [("unparsable", "error")]
    assert "first" in doc["findings"][-1]["message"]
