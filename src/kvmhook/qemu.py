"""What each QEMU release provides, in one place: the arch-to-target map, the softmmu
targets, and which release removed (or will remove) which versioned machine type.

Figures come from libvirt's captures of real QEMU binaries
(tests/qemucapabilitiesdata/caps_<version>_<arch>.xml: the machine types each release
offered and which it marked deprecated) and from QEMU's deprecation policy; each line of
the tables says where it comes from. tests/test_machines.py checks them against captures.
"""

from __future__ import annotations

from collections import namedtuple

from .domains import Pattern

# libvirt's names for QEMU targets where they differ from the arch name.
ARCH_TO_TARGET = {
    "i686": "i386",
    "armv6l": "arm",
    "armv7l": "arm",
    "ppc64le": "ppc64",
}
# QEMU's softmmu targets, as QEMU_SOFTMMU_TARGETS names them (current ones and ones that
# older releases had), for checking names when the pending ebuild's IUSE is not known.
QEMU_TARGETS = frozenset(
    [
        "aarch64",
        "alpha",
        "arm",
        "avr",
        "cris",
        "hppa",
        "i386",
        "loongarch64",
        "m68k",
        "microblaze",
        "microblazeel",
        "mips",
        "mips64",
        "mips64el",
        "mipsel",
        "nios2",
        "or1k",
        "ppc",
        "ppc64",
        "riscv32",
        "riscv64",
        "rx",
        "s390x",
        "sh4",
        "sh4eb",
        "sparc",
        "sparc64",
        "tricore",
        "x86_64",
        "xtensa",
        "xtensaeb",
    ]
)
# A binary that runs the guests of a target that will not be installed.
COMPATIBLE_TARGET = {"i386": "x86_64", "arm": "aarch64", "ppc": "ppc64"}

Version = tuple[int, int]

# Versioned machine type families: name prefix, and the first release with such a type.
FAMILIES = {
    "pc-i440fx-": (1, 4),
    "pc-q35-": (1, 4),
    "pc-": (0, 10),  # the old i440fx names, pc-0.10 to pc-1.3
    "virt-": (2, 9),  # arm and aarch64
    "s390-ccw-virtio-": (2, 4),
    "pseries-": (2, 1),
}
# X.Y, with a patch number (pc-q35-4.0.1) or ppc64's -sxxm variant (pseries-2.12-sxxm)
_VERSIONED = Pattern(
    r"(pc-i440fx-|pc-q35-|pc-|virt-|s390-ccw-virtio-|pseries-)(\d+)\.(\d+)(\.\d+|-sxxm)?"
)
_FOREIGN = Pattern(r"(pc-i440fx-|pc-q35-|virt-|s390-ccw-virtio-|pseries-).+")

# Removed by hand before QEMU 10.1: (family, first, last, the release without them).
REMOVED_BY_HAND = (
    ("pc-q35-", (1, 4), (2, 3), (2, 6)),  # caps_2.6.0: q35 starts at 2.4
    ("pc-", (0, 10), (0, 11), (4, 0)),  # caps_4.0.0 vs caps_3.1.0
    ("pc-", (0, 12), (0, 15), (5, 0)),  # caps_5.0.0 vs caps_4.2.0
    ("pc-", (1, 0), (1, 3), (6, 0)),  # QEMU 6.0's removal of pc-1.0 to pc-1.3
    ("pc-i440fx-", (1, 4), (1, 7), (8, 2)),  # QEMU 8.2 removed them
    ("pc-i440fx-", (2, 0), (2, 3), (9, 1)),  # caps_9.1.0 (caps_9.0.0 still has them)
    ("s390-ccw-virtio-", (2, 4), (2, 8), (10, 0)),  # caps_10.0.0_s390x starts at 2.9
    # ppc64: pseries-2.1 to 2.12 (and 2.12-sxxm) went between 7.1 and 10.0; the release
    # is not pinned by a capture here, so 10.0, the latest it can be, stands for it.
    ("pseries-", (2, 1), (2, 12), (10, 0)),
)
# Marked deprecated by hand before the 3-year rule (caps_9.0.0: pc-i440fx-2.0 to 2.3).
DEPRECATED_BY_HAND = (("pc-i440fx-", (2, 0), (2, 3), (9, 0)),)

# QEMU's policy from 10.1 on (checked against caps_10.1.0 to caps_11.0.0, x86_64 and s390x):
# release N.M deletes versioned type X.Y when N-X > 6, or N-X = 6 and Y <= M; from 9.1 on it
# marks deprecated those older than 3 years, by the same arithmetic with 3.
RULE_REMOVES_FROM = (10, 1)
RULE_DEPRECATES_FROM = (9, 1)
KEEP_YEARS, DEPRECATE_YEARS = 6, 3
RULE_FAMILIES = ("pc-i440fx-", "pc-q35-", "virt-", "s390-ccw-virtio-", "pseries-")
# The newest release known here: a live ebuild (9999) builds the one after it.
NEWEST_RELEASE = (11, 1)


class Verdict(namedtuple("Verdict", "status release")):
    """status: "ok", "deprecated" (release: when the rule removes it, or None), "removed"
    (release: the release that removed it), "foreign" (no upstream QEMU has it),
    "unversioned" (an alias such as pc or q35, or another board) or "newer" (newer than
    that QEMU)."""

    __slots__ = ()


_LIVE = Pattern(r"9999+")
_RELEASE = Pattern(r"(\d+)\.(\d+)(?:\.(\d+))?")


def next_release(version: Version) -> Version:
    major, minor = version
    return (major, minor + 1) if minor < 2 else (major + 1, 0)


def parse_version(text: str) -> Version | None:
    """The QEMU release a version string (a PV) builds: 9999 and N.M.50 or later build
    the next release. None when it is not a version."""
    if _LIVE.fullmatch(text):
        return next_release(NEWEST_RELEASE)
    match = _RELEASE.match(text)
    if not match:
        return None
    # QEMU makes three releases a year, N.0 to N.2: a larger minor (9.9999) is N's last
    version = (int(match.group(1)), min(int(match.group(2)), 2))
    micro = int(match.group(3) or 0)
    return next_release(version) if micro >= 50 else version


def family(machine: str) -> tuple[str, Version] | None:
    """(family prefix, X.Y) of a versioned machine type, else None."""
    match = _VERSIONED.fullmatch(machine)
    if not match:
        return None
    return match.group(1), (int(match.group(2)), int(match.group(3)))


def foreign_family(machine: str) -> str | None:
    """The upstream family of a type no upstream QEMU has (pc-q35-rhel9.4.0), else None."""
    match = _FOREIGN.fullmatch(machine)
    return match.group(1) if match and family(machine) is None else None


def _release(
    by_hand: tuple, years: int, start: Version, prefix: str, version: Version
) -> Version | None:
    """The release that acts on this versioned type: a hand-made entry, else the rule (the
    first release N.M with N-X > years, or N-X = years and Y <= M, from start on)."""
    for fam, first, last, release in by_hand:
        if fam == prefix and first <= version <= last:
            return release
    if prefix in RULE_FAMILIES:
        return max((version[0] + years, version[1]), start)
    return None


def removal(prefix: str, version: Version) -> Version | None:
    """The release that removes this versioned type (by hand or by the rule), or None."""
    return _release(REMOVED_BY_HAND, KEEP_YEARS, RULE_REMOVES_FROM, prefix, version)


def deprecation(prefix: str, version: Version) -> Version | None:
    """The release that marks this versioned type deprecated, or None."""
    return _release(DEPRECATED_BY_HAND, DEPRECATE_YEARS, RULE_DEPRECATES_FROM, prefix, version)


def verdict(machine: str, qemu: Version) -> Verdict:
    """What QEMU release qemu makes of machine type machine."""
    found = family(machine)
    if found is None:
        return Verdict("foreign" if foreign_family(machine) else "unversioned", None)
    prefix, version = found
    if version > qemu:
        return Verdict("newer", None)
    removed = removal(prefix, version)
    if removed is not None and removed <= qemu:
        return Verdict("removed", removed)
    deprecated = deprecation(prefix, version)
    if deprecated is not None and deprecated <= qemu:
        return Verdict("deprecated", removed)
    return Verdict("ok", None)


def newest_common(prefix: str, *releases: Version) -> str | None:
    """The newest type of a family that every one of these releases provides, or None.

    Each release N.M adds its own type N.M, and keeps it for six years: the oldest
    release's own type is the newest they share, unless the family did not exist yet.
    """
    oldest = min(releases)
    if prefix == "pc-" or oldest < FAMILIES[prefix]:
        return None
    name = f"{prefix}{oldest[0]}.{oldest[1]}"
    return name if all(verdict(name, r).status in ("ok", "deprecated") for r in releases) else None


def show(version: Version) -> str:
    return f"{version[0]}.{version[1]}"
