"""The Python API (kvmhook.api): results for check, fix, dry run and undo on the corpus, one
exception type, and the command line's JSON as exactly the rendered result."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest
from conftest import CORPUS, CORPUS_TARGETS, Root, domain_xml, needs_root, tmpfs
from hypothesis import given
from hypothesis import strategies as st
from test_corpus import wrapper_files

from kvmhook import api, report

corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"the shared corpus is not at {CORPUS}")


def wrapper_paths(r: Root) -> list[str]:
    return sorted(str(r.qemu / name) for name in wrapper_files())


@corpus
def test_check_on_the_corpus(corpus_root):
    before = corpus_root.snapshot()
    result = api.check(str(corpus_root.path), targets=CORPUS_TARGETS)
    assert result.command == "check" and result.root == str(corpus_root.path)
    wrappers = sorted({f.file for f in result.findings if f.kind == "wrapper-emulator"})
    assert wrappers == wrapper_paths(corpus_root)
    assert result.has_errors and result.errors
    assert result.fixed == () and result.backup is None and not result.changed
    assert result.scanned == ((str(corpus_root.qemu), 135),)
    assert result.merge.targets == frozenset(CORPUS_TARGETS) and result.merge.source == "options"
    assert result.fix_command.startswith(f"kvmhook fix --root {corpus_root.path} --targets ")
    assert not result.daemon.reached
    assert corpus_root.snapshot() == before


@corpus
def test_a_dry_run_plans_and_writes_nothing(corpus_root):
    before = corpus_root.snapshot()
    result = api.fix(str(corpus_root.path), targets=CORPUS_TARGETS, dry_run=True)
    assert result.dry_run and result.changed
    assert sorted(result.planned) == wrapper_paths(corpus_root)
    assert {f.kind for f in result.changes} == {"wrapper-emulator"}
    for path in result.planned:
        assert f"--- {path}\n" in result.diff
    assert result.fixed == () and result.backup is None
    assert corpus_root.snapshot() == before


@corpus
def test_fix_then_undo_on_the_corpus(corpus_root):
    originals = {p.name: p.read_bytes() for p in corpus_root.qemu.iterdir()}
    done = api.fix(str(corpus_root.path), targets=CORPUS_TARGETS, diff=True)
    assert done.changed and not done.dry_run
    assert list(done.fixed) == wrapper_paths(corpus_root)
    assert not [f for f in done.findings if f.kind == "wrapper-emulator"]
    assert os.path.isdir(done.backup)
    assert {f.file for f in done.changes} == set(done.fixed)
    for path in done.fixed:
        assert f"+++ {path}\n" in done.diff
    again = api.fix(str(corpus_root.path), targets=CORPUS_TARGETS)
    assert not again.changed and again.fixed == () and again.backup is None

    fixed_now = {p.name: p.read_bytes() for p in corpus_root.qemu.iterdir()}
    plan = api.undo(str(corpus_root.path), dry_run=True)
    assert plan.dry_run and plan.changed and plan.backup == done.backup
    assert list(plan.planned) == list(done.fixed)
    assert {p.name: p.read_bytes() for p in corpus_root.qemu.iterdir()} == fixed_now

    undone = api.undo(str(corpus_root.path))
    assert undone.command == "undo" and undone.changed
    assert undone.backup == done.backup and sorted(undone.fixed) == list(done.fixed)
    assert not undone.findings
    assert {p.name: p.read_bytes() for p in corpus_root.qemu.iterdir()} == originals
    assert api.undo(str(corpus_root.path)).backup is None  # nothing left to undo
    assert not api.undo(str(corpus_root.path), dry_run=True).changed
    assert [r.folder for r in api.runs(str(corpus_root.path))] == [done.backup]


def test_a_result_cannot_be_changed(root):
    root.add("vm1.xml", domain_xml())
    result = api.check(str(root.path))
    with pytest.raises(AttributeError):
        result.findings = ()
    with pytest.raises(AttributeError):
        del result.root
    assert result == api.check(str(root.path))
    assert isinstance(result.findings, tuple)


def test_the_json_is_the_rendered_result(root):
    root.add("vm1.xml", domain_xml())
    root.add("vm2.xml", domain_xml("vm2", emulator="/usr/bin/qemu-system-x86_64"))
    for command, call in (
        (["check"], lambda: api.check(str(root.path))),
        (["fix", "--dry-run"], lambda: api.fix(str(root.path), dry_run=True)),
    ):
        code, out = root.run(*command, "--json")
        result = call()
        assert out == report.result_json(result)
        assert code == (1 if result.has_errors else 0)
        assert json.loads(out)["findings"] == [f.as_json() for f in result.findings]
    code, out = root.run("fix", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["fixed"] == [str(root.qemu / "vm1.xml")]
    assert list(doc) == [
        *("schema", "root", "findings", "fixed", "backup", "changes", "daemon", "synced"),
        *("merge", "scanned"),
    ]
    code, out = root.run("undo", "--json")
    assert code == 0 and list(json.loads(out)) == [
        *("schema", "root", "findings", "fixed", "backup", "daemon", "synced")
    ]


def test_the_text_is_the_rendered_result(root):
    root.add("vm1.xml", domain_xml())
    code, out = root.run("check")
    assert out == report.result_text(api.check(str(root.path)))
    assert f"kvmhook fix --root {root.path}" in out


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: api.check(str(r / "missing")), "is not a folder"),
        (lambda r: api.check(str(r), targets="x86-64"), "is not a QEMU softmmu target name"),
        (lambda r: api.check(str(r), targets=["x68_64"]), "did you mean x86_64?"),
        (lambda r: api.check(str(r), targets=[]), "--targets: empty"),
        (lambda r: api.fix(str(r), qemu_version="ten"), "is not a version"),
        (lambda r: api.undo(str(r), run="nope"), "no backup run"),
        (lambda r: api.undo(str(r), run="nope", dry_run=True), "no backup run"),
        (lambda r: api.hook(str(r), mode="loud"), "unknown mode"),
    ],
)
def test_what_cannot_be_done_raises_kvmhook_error(root, call, message):
    root.add("vm1.xml", domain_xml())
    api.fix(str(root.path))  # a state folder, so that undo gets as far as the run's name
    with pytest.raises(api.KvmhookError, match=message):
        call(root.path)


@needs_root
def test_a_read_only_root_raises_and_keeps_every_file(tmp_path):
    with tmpfs(tmp_path / "mnt", "1M") as mnt:
        r = Root(mnt / "root")
        data = domain_xml()
        r.add("vm1.xml", data)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(api.KvmhookError, match="Read-only file system") as raised:
            api.fix(str(r.path))
        assert raised.value.intact
        assert "\n" not in str(raised.value)
        assert (r.qemu / "vm1.xml").read_bytes() == data
        assert api.check(str(r.path)).has_errors  # reading still works


def test_the_hook_result(root):
    root.add("vm1.xml", domain_xml())
    explain = api.hook(str(root.path))
    assert explain.stop and explain.mode == "explain" and not explain.changed
    warn = api.hook(str(root.path), mode="warn")
    assert warn.has_errors and not warn.stop
    fixed = api.hook(str(root.path), mode="fix")
    assert not fixed.stop and fixed.fixed == (str(root.qemu / "vm1.xml"),) and fixed.backup
    lines = report.portage_lines(fixed)
    assert lines[0].startswith("einfo kvmhook: read the libvirt domain configs: 1 in ")
    assert any(line.startswith("elog kvmhook: fixed ") for line in lines)


@given(st.text(max_size=20))
def test_shell_quote_is_shlex_quote(word):
    assert api.shell_quote(word) == shlex.quote(word)
