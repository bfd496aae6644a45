"""The fix edits the emulator text and <domain type> and not one byte more."""

from __future__ import annotations

import io
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import Root, domain_xml, line_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmhook import edit, rules, scan
from kvmhook.__main__ import main
from kvmhook.domains import Config, parse
from kvmhook.findings import Change

FACTS = rules.Facts(host_arch="x86_64", installed=frozenset({"x86_64", "aarch64"}))
NEW = "/usr/bin/qemu-system-x86_64"


def outcome(data: bytes, facts=FACTS) -> scan.Outcome:
    domain, kind, problem = parse(data)
    return scan.assess(Config("/r/vm.xml", "file", data, domain, kind, problem), facts)


def test_libvirt_style_file_changes_only_the_path():
    data = domain_xml()
    assert outcome(data).new_data == data.replace(b"/usr/bin/qemu-kvm", NEW.encode())


@pytest.mark.parametrize(
    "prefix",
    [
        b"\xef\xbb\xbf",
        b"<?xml version='1.0' encoding='UTF-8'?>\n",
        b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8" standalone="yes"?>\r\n',
        b"<?xml version='1.0' encoding='ISO-8859-1'?>\n<!-- caf\xe9 -->\n",
    ],
)
def test_prolog_bom_and_encoding_are_kept(prefix):
    data = prefix + domain_xml()
    assert outcome(data).new_data == prefix + domain_xml(emulator=NEW)


def test_crlf_and_double_quotes_are_kept():
    data = domain_xml(dtype="qemu").replace(b"\n", b"\r\n").replace(b"'", b'"')
    expected = domain_xml(dtype="kvm", emulator=NEW).replace(b"\n", b"\r\n").replace(b"'", b'"')
    assert outcome(data).new_data == expected


def test_namespaces_and_metadata_are_kept():
    extra = (
        "  <metadata>\n    <app:emulator xmlns:app='urn:app'>/usr/bin/qemu-kvm-not</app:emulator>\n"
        "    <emulator xmlns='urn:other'>leave me</emulator>\n  </metadata>\n"
        "  <qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
        "    <qemu:arg value='-no-hpet'/>\n  </qemu:commandline>\n"
    )
    data = domain_xml(extra=extra)
    result = outcome(data)
    assert result.new_data == domain_xml(extra=extra, emulator=NEW)
    # the metadata mention still trips the ebuild's grep, and is said to
    assert [f.kind for f in result.findings].count("grep-match") == 1


def test_type_attribute_among_others_in_either_quote_style():
    data = domain_xml(dtype="qemu").replace(
        b"<domain type='qemu'>", b'<domain id="3"\n   type = "qemu" xmlns:q=\'urn:q\'>'
    )
    new = outcome(data).new_data
    assert new == data.replace(b'"qemu"', b'"kvm"').replace(b"/usr/bin/qemu-kvm", NEW.encode())


def test_whitespace_around_the_path_is_kept():
    data = domain_xml(emulator="\n      /usr/bin/qemu-kvm  \n    ")
    assert outcome(data).new_data == domain_xml(emulator=f"\n      {NEW}  \n    ")


def test_comment_mentions_are_never_rewritten():
    data = domain_xml(extra="  <!-- <emulator>/usr/bin/qemu-kvm</emulator> -->\n")
    result = outcome(data)
    assert result.new_data == data.replace(
        b"    <emulator>/usr/bin/qemu-kvm</emulator>", f"    <emulator>{NEW}</emulator>".encode()
    )
    assert result.new_data.count(b"/usr/bin/qemu-kvm") == 1
    (mention,) = [f for f in result.findings if f.kind == "grep-match"]
    assert mention.line == line_of(data, b"<!-- <emulator>")


def test_markup_inside_the_emulator_is_refused():
    data = domain_xml(emulator="/usr/bin/<!-- x -->qemu-kvm")
    result = outcome(data)
    assert result.new_data is None
    (f,) = [f for f in result.findings if f.kind == "wrapper-emulator"]
    assert not f.fixable and "not fixed automatically" in f.message


def unfixable_wrapper(data: bytes) -> str:
    result = outcome(data)
    assert result.new_data is None
    (f,) = [f for f in result.findings if f.kind == "wrapper-emulator"]
    assert not f.fixable
    return f.message


def test_character_reference_in_the_path_is_refused_not_guessed():
    message = unfixable_wrapper(domain_xml(emulator="/usr/bin/qemu&#45;kvm"))
    assert "character references" in message


def test_utf16_file_is_refused():
    data = domain_xml().decode().replace("<!--", "<?xml version='1.0' encoding='UTF-16'?><!--", 1)
    assert "UTF-16" in unfixable_wrapper(data.encode("utf-16"))


def test_doctype_is_refused():
    data = b"<!DOCTYPE domain>\n" + domain_xml()
    assert "DOCTYPE" in unfixable_wrapper(data)


def test_splice_refuses_bytes_that_are_not_the_expected_value():
    data = domain_xml()
    domain = parse(data)[0]
    with pytest.raises(edit.EditError):
        edit.splice(data, [Change("emulator", 0, "/usr/bin/kvm", NEW)], domain)


def test_verify_catches_an_edit_that_is_not_the_intended_one():
    data = domain_xml()
    wrong = data.replace(b"<name>vm1</name>", b"<name>vm2</name>").replace(
        b"/usr/bin/qemu-kvm", NEW.encode()
    )
    with pytest.raises(edit.EditError, match="differs"):
        edit.verify(data, wrong, [Change("emulator", 0, "/usr/bin/qemu-kvm", NEW)])


def test_dry_run_diff_shows_the_change():
    data = domain_xml()
    diff = edit.unified_diff("vm.xml", data, outcome(data).new_data)
    assert "-    <emulator>/usr/bin/qemu-kvm</emulator>" in diff
    assert f"+    <emulator>{NEW}</emulator>" in diff


# Property tests: a generator of libvirt-like files whose expected fix is known.
variants = st.fixed_dictionaries(
    {
        "bom": st.booleans(),
        "decl": st.sampled_from(
            ["", "<?xml version='1.0' encoding='UTF-8'?>\n", '<?xml version="1.0"?>\n']
        ),
        "crlf": st.booleans(),
        "dquote": st.booleans(),
        "dtype": st.sampled_from(["kvm", "qemu"]),
        "arch": st.sampled_from(["x86_64", "aarch64", "i686", None]),
        "wrapper": st.sampled_from(["/usr/bin/qemu-kvm", "/usr/bin/kvm", "/usr/libexec/qemu-kvm"]),
        "pad": st.sampled_from(["", " ", "\n    "]),
        "comment": st.sampled_from(["", "  <!-- was qemu-kvm once -->\n", "  <!-- é ü -->\n"]),
        # no "--": the name also lands in libvirt's header comment, where "--" is not XML
        "name": st.from_regex(
            r"[A-Za-z][A-Za-z0-9_.]{0,20}(-[A-Za-z0-9_.]{1,5}){0,2}", fullmatch=True
        ),
        "keep_type": st.booleans(),
    }
)


def render(v: dict, emulator: str, dtype: str) -> bytes:
    emu = f"{v['pad']}{emulator}{v['pad']}"
    data = domain_xml(v["name"], emu, dtype, v["arch"], v["comment"])
    if v["dquote"]:
        data = data.replace(b"'", b'"')
    if v["crlf"]:
        data = data.replace(b"\n", b"\r\n")
    head = v["decl"].encode()
    if v["dquote"]:
        head = head.replace(b"'", b'"')
    return (b"\xef\xbb\xbf" if v["bom"] else b"") + head + data


def expected_fix(v: dict) -> bytes:
    target = {"aarch64": "aarch64"}.get(v["arch"] or "x86_64", "x86_64")
    dtype = "kvm" if v["dtype"] == "qemu" and not v["keep_type"] else v["dtype"]
    return render(v, f"/usr/bin/qemu-system-{target}", dtype)


@given(variants)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fix_changes_only_the_emulator_and_type_bytes(v):
    facts = rules.Facts("x86_64", frozenset({"x86_64", "aarch64"}), keep_type=v["keep_type"])
    result = outcome(render(v, v["wrapper"], v["dtype"]), facts)
    assert result.new_data == expected_fix(v)
    again = outcome(result.new_data, facts)
    assert again.new_data is None
    assert not [f for f in again.findings if f.severity == "error"]


@given(variants)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fix_then_fix_then_undo_gives_back_the_original(v):
    original = render(v, v["wrapper"], v["dtype"])
    with tempfile.TemporaryDirectory() as tmp:
        r = Root(Path(tmp) / "root")
        path = r.add("vm.xml", original)
        args = ["--root", str(r.path)] + (["--keep-type"] if v["keep_type"] else [])
        with redirect_stdout(io.StringIO()):
            assert main(["fix", *args]) == 0
            fixed = path.read_bytes()
            assert fixed == expected_fix(v)
            before = r.snapshot()
            assert main(["fix", *args]) == 0
            assert r.snapshot() == before
            assert main(["undo", "--root", str(r.path)]) == 0
        assert path.read_bytes() == original
