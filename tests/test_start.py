"""The lean start: check and hook read their command line without argparse, and JSON is
written without json; both must give exactly what the libraries give."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import domain_xml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmhook import report
from kvmhook.__main__ import build_parser, plain_args

NEW = "/usr/bin/qemu-system-x86_64"

documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=30,
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents)
def test_json_is_what_json_dumps_writes(doc):
    assert report.dumps(doc) == json.dumps(doc, indent=2)


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],
        ["check", "--json"],
        ["check", "--root", "/r", "--session", "--json", "--targets", "x86_64,aarch64"],
        ["check", "--qemu-version", "10.1.0", "--installed-version", "10.0.0"],
        ["check", "--connect", "qemu:///system", "--root", "/"],
        ["hook", "--mode", "fix", "--machines", "update", "--root", "/r/", "--qemu-version", "9"],
        ["hook", "--root", "/r", "--targets", "x86_64 aarch64"],
    ],
)
def test_plain_command_lines_read_as_argparse_reads_them(argv):
    plain = plain_args(argv)
    assert plain is not None
    assert vars(plain) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--help"],
        ["check", "--root=/r"],
        ["check", "--ro", "/r"],
        ["check", "--root"],
        ["check", "--root", "-x"],
        ["check", "--dry-run"],
        ["fix"],
        ["hook", "--mode", "sometimes"],
        ["--version"],
        [],
    ],
)
def test_anything_else_goes_to_argparse(argv):
    assert plain_args(argv) is None


def test_a_plain_check_imports_neither_argparse_nor_json_nor_re(tmp_path):
    root = tmp_path / "root"
    (root / "etc/libvirt/qemu").mkdir(parents=True)
    (root / "etc/libvirt/qemu/clean.xml").write_bytes(domain_xml("clean", emulator=NEW))
    (root / "etc/libvirt/qemu/stale.xml").write_bytes(domain_xml("stale"))  # the full parse
    code = (
        "import sys\nfrom kvmhook.__main__ import main\nmain(sys.argv[1:])\n"
        "print(sorted({'argparse', 'json', 're', 'lxml'} & set(sys.modules)), file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "check", "--json", "--root", str(root)],
        capture_output=True,
        text=True,
    )
    assert proc.stderr.strip().splitlines()[-1] == "[]"


def test_a_large_folder_scanned_on_both_cores_says_what_one_process_says(root, monkeypatch):
    from kvmhook import rules, scan

    for i in range(400):
        stale = i % 7 == 0
        data = domain_xml(f"vm{i:03d}", emulator="/usr/bin/qemu-kvm" if stale else NEW)
        root.add(f"vm{i:03d}.xml", data if i % 97 else b"<domain><broken")
    facts = rules.Facts(host_arch="x86_64", installed=frozenset({"x86_64"}))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with scan.Tree(str(root.path), False) as tree:
        one = scan.scan(tree, facts, fast=True, parallel=False)
        forked = scan.scan(tree, facts, fast=True, parallel=True)
    said = [[f.as_json() for f in o.findings] for o in one]
    assert said == [[f.as_json() for f in o.findings] for o in forked]
    assert len(said) == 58 + 4  # the stale ones and the broken ones, from both halves
    code, doc = root.json("check")
    assert len(doc["findings"]) == sum(len(s) for s in said)


_ATTRIBUTE = r"\s+([^\s=/>]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')"
_names = st.sampled_from([b"type", b"machine", b"arch", b"x", b"typ", b"types"])
_values = st.text(alphabet="abc-1.2 ", max_size=8).map(str.encode)
_space = st.sampled_from([b" ", b"  ", b"\n", b"\t ", b"\r\n"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_space, _names, _space | st.just(b""), _values, st.sampled_from([b"'", b'"'])),
        max_size=5,
    ),
    _names,
)
def test_attribute_spans_are_what_the_regular_expression_finds(attrs, wanted):
    import re

    from kvmhook.domains import attribute_span

    tag = b"<type" + b"".join(s + n + sp + b"=" + sp + q + v + q for s, n, sp, v, q in attrs) + b">"
    expected = None
    pos = len(b"<type")
    while match := re.compile(_ATTRIBUTE.encode()).match(tag, pos):
        if match.group(1) == wanted:
            expected = match.span(2 if match.group(2) is not None else 3)
            break
        pos = match.end()
    assert attribute_span(tag, len(b"<type"), wanted) == expected
