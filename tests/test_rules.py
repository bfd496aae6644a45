"""Detection and the choice of the replacement binary."""

from __future__ import annotations

import pytest
from conftest import domain_xml, line_of

from kvmhook import rules
from kvmhook.domains import Config, parse


def config(data: bytes) -> Config:
    domain, kind, problem = parse(data)
    return Config("/r/etc/libvirt/qemu/vm.xml", "file", data, domain, kind, problem)


def facts(installed=("x86_64", "aarch64"), targets=None, keep_type=False, host="x86_64"):
    return rules.Facts(
        host_arch=host,
        installed=frozenset(installed),
        targets=None if targets is None else frozenset(targets),
        keep_type=keep_type,
    )


def by_kind(findings, kind):
    return [f for f in findings if f.kind == kind]


@pytest.mark.parametrize(
    "emulator", ["/usr/bin/qemu-kvm", "/usr/bin/kvm", "/usr/libexec/qemu-kvm", "/opt/x/qemu-kvm"]
)
def test_wrapper_in_any_folder_is_a_fixable_error(emulator):
    (f,) = by_kind(
        rules.evaluate(config(domain_xml(emulator=emulator)), facts()), "wrapper-emulator"
    )
    assert f.severity == "error" and f.fixable
    assert (f.current, f.proposed) == (emulator, "/usr/bin/qemu-system-x86_64")
    assert f.line == line_of(domain_xml(emulator=emulator), b"<emulator>") and f.domain == "vm1"


@pytest.mark.parametrize("emulator", ["/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-kvm-ng", None])
def test_other_emulators_are_not_wrappers(emulator):
    assert (
        by_kind(rules.evaluate(config(domain_xml(emulator=emulator)), facts()), "wrapper-emulator")
        == []
    )


@pytest.mark.parametrize(
    ("arch", "target"),
    [
        ("x86_64", "x86_64"),
        ("i686", "i386"),
        ("armv6l", "arm"),
        ("armv7l", "arm"),
        ("ppc64le", "ppc64"),
        ("aarch64", "aarch64"),
        ("riscv64", "riscv64"),
        ("s390x", "s390x"),
    ],
)
def test_arch_maps_to_target_like_libvirt(arch, target):
    assert rules.target_for_arch(arch) == target
    (f,) = by_kind(
        rules.evaluate(config(domain_xml(arch=arch)), facts(installed=[target])), "wrapper-emulator"
    )
    assert f.proposed == f"/usr/bin/qemu-system-{target}" and f.fixable


def test_missing_arch_means_the_host_arch():
    (f,) = rules.evaluate(config(domain_xml(arch=None)), facts(host="aarch64"))
    assert f.proposed == "/usr/bin/qemu-system-aarch64"


@pytest.mark.parametrize(
    ("arch", "fallback"), [("i686", "x86_64"), ("armv7l", "aarch64"), ("ppc", "ppc64")]
)
def test_falls_back_to_a_compatible_binary(arch, fallback):
    (f,) = rules.evaluate(config(domain_xml(arch=arch)), facts(installed=[fallback]))
    assert f.fixable and f.proposed == f"/usr/bin/qemu-system-{fallback}"
    assert "will not be installed" in f.message


def test_targets_decide_over_installed_binaries():
    (f,) = rules.evaluate(
        config(domain_xml(arch="aarch64")), facts(installed=["aarch64"], targets=["x86_64"])
    )
    assert not f.fixable and f.severity == "error"
    assert "qemu_softmmu_targets_aarch64" in f.message
    assert f.proposed == "/usr/bin/qemu-system-aarch64"


def test_no_binary_at_all_names_the_target_to_enable():
    (f,) = rules.evaluate(config(domain_xml(arch="s390x")), facts(installed=[]))
    assert not f.fixable and "qemu_softmmu_targets_s390x" in f.message


def test_removed_target_is_an_unfixable_error():
    data = domain_xml(emulator="/usr/bin/qemu-system-aarch64", arch="aarch64")
    (f,) = rules.evaluate(config(data), facts(targets=["x86_64"]))
    assert (f.kind, f.severity, f.fixable) == ("removed-target", "error", False)
    assert "qemu_softmmu_targets_aarch64" in f.message
    assert f.line == line_of(data, b"<emulator>")


def test_removed_target_needs_targets():
    data = domain_xml(emulator="/usr/bin/qemu-system-aarch64", arch="aarch64")
    assert rules.evaluate(config(data), facts(installed=[])) == []
    assert rules.evaluate(config(data), facts(targets=["aarch64", "x86_64"])) == []


def test_type_qemu_with_a_wrapper_is_set_to_kvm():
    found = rules.evaluate(config(domain_xml(dtype="qemu")), facts())
    (f,) = by_kind(found, "kvm-dropped")
    assert f.severity == "warning" and f.fixable
    assert (f.change.old, f.change.new) == ("qemu", "kvm")
    assert "TCG" in f.message


def test_keep_type_keeps_qemu_and_says_so():
    found = rules.evaluate(config(domain_xml(dtype="qemu")), facts(keep_type=True))
    (f,) = by_kind(found, "kvm-dropped")
    assert not f.fixable and "--keep-type" in f.message and "TCG" in f.message


def test_type_qemu_without_a_wrapper_is_left_alone():
    data = domain_xml(dtype="qemu", emulator="/usr/bin/qemu-system-x86_64")
    assert rules.evaluate(config(data), facts()) == []


def test_registry_holds_independent_checks():
    assert len(rules.CHECKS) >= 5
    data = domain_xml(dtype="qemu")
    combined = rules.evaluate(config(data), facts())
    one_by_one = [f for check in rules.CHECKS for f in check(config(data), facts())]
    assert combined == one_by_one


def test_mention_after_fix_is_reported_with_its_line():
    extra = "  <description>was /usr/bin/qemu-kvm</description>\n"
    c = config(domain_xml(extra=extra))
    after = c.data.replace(b">/usr/bin/qemu-kvm<", b">/usr/bin/qemu-system-x86_64<")
    (f,) = rules.leftover_mentions(c, after)
    assert (f.kind, f.severity, f.fixable) == ("grep-match", "error", False)
    assert f.line == line_of(c.data, b"<description>")
    assert len(rules.leftover_mentions(c, c.data)) == 2
