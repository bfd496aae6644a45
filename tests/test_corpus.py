"""check, fix and undo over real domain XMLs written by libvirt and virt-manager."""

from __future__ import annotations

import difflib
import os

import pytest
from conftest import CORPUS
from lxml import etree

pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"the shared corpus is not at {CORPUS} (CI always has it)"
)


def wrapper_files() -> set[str]:
    """Corpus files whose <devices><emulator> is a qemu-kvm wrapper, found independently."""
    names = set()
    for path in CORPUS.glob("*.xml"):
        for emulator in etree.parse(str(path)).getroot().findall("devices/emulator"):
            if os.path.basename((emulator.text or "").strip()) in ("qemu-kvm", "kvm"):
                names.add(path.name)
    return names


def test_corpus_is_what_its_readme_says():
    assert len(list(CORPUS.glob("*.xml"))) == 135
    assert len(wrapper_files()) == 10


def test_check_names_every_wrapper_and_writes_nothing(corpus_root):
    before = corpus_root.snapshot()
    code, doc = corpus_root.json("check")
    assert code == 1
    flagged = {
        os.path.basename(f["file"]) for f in doc["findings"] if f["kind"] == "wrapper-emulator"
    }
    assert flagged == wrapper_files()
    assert all(f["fixable"] for f in doc["findings"] if f["kind"] == "wrapper-emulator")
    assert corpus_root.snapshot() == before


def test_fix_touches_only_wrapper_files_and_only_their_emulator(corpus_root):
    code, doc = corpus_root.json("fix")
    assert code == 0, doc["findings"]
    fixed = {os.path.basename(p) for p in doc["fixed"]}
    assert fixed == wrapper_files()
    for path in CORPUS.glob("*.xml"):
        original = path.read_bytes()
        now = (corpus_root.qemu / path.name).read_bytes()
        if path.name not in fixed:
            assert now == original, path.name
            continue
        changed = [
            line
            for line in difflib.ndiff(original.decode().splitlines(), now.decode().splitlines())
            if line[:1] in "+-"
        ]
        assert len(changed) == 2, changed
        assert "qemu-kvm" in changed[0] and "<emulator>" in changed[0]
        assert "<emulator>/usr/bin/qemu-system-" in changed[1]
        assert len(now.splitlines()) == len(original.splitlines())
    code, after = corpus_root.json("check")
    assert code == 0 and not [f for f in after["findings"] if f["kind"] == "wrapper-emulator"]


def test_undo_gives_the_corpus_back(corpus_root):
    before = {p.name: p.read_bytes() for p in corpus_root.qemu.iterdir()}
    assert corpus_root.run("fix")[0] == 0
    assert corpus_root.run("undo")[0] == 0
    assert {p.name: p.read_bytes() for p in corpus_root.qemu.iterdir()} == before
