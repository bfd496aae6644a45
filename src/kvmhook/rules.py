"""What is stale in a domain config and what replaces it.

Each check is independent: it takes one config plus the facts of the merge and
yields findings. New checks register themselves with @check.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator

from . import qemu
from .domains import NEEDLE, Config, Domain, Emulator, Pattern, mention_lines
from .findings import Change, Finding
from .qemu import ARCH_TO_TARGET, COMPATIBLE_TARGET

WRAPPERS = frozenset({"qemu-kvm", "kvm"})
BINARY_DIR = "/usr/bin"
BINARY_PREFIX = "qemu-system-"

_SYSTEM_BINARY = Pattern(r"^/usr/bin/qemu-system-([A-Za-z0-9_]+)$")


class Facts(
    namedtuple(
        "Facts",
        "host_arch installed targets keep_type held daemon daemon_folder"
        " pending qemu_now saved update_machines",
        defaults=(None, False, None, None, None, None, None, None, False),
    )
):
    """What the pending merge (or the host) provides.

    installed: the qemu-system-* targets present under ROOT; targets: the
    QEMU_SOFTMMU_TARGETS the merge installs, or None when unknown (then installed
    decides); held: what a reached libvirt daemon (URI daemon) holds, by UUID, or None;
    daemon_folder: the (device, inode) of the folder that daemon loads its configs from;
    pending, qemu_now: the QEMU releases (major, minor) about to be merged and installed
    now, or None; saved: domain name -> its saved states (paths); update_machines: fix
    moves domains off machine types the merge removes (fix --machines).
    """

    __slots__ = ()

    def available(self, target: str) -> bool:
        pool = self.targets if self.targets is not None else self.installed
        return target in pool


def installed_targets(root: str) -> frozenset[str]:
    folder = os.path.join(root, BINARY_DIR.lstrip("/"))
    try:
        names = os.listdir(folder)
    except OSError:
        return frozenset()
    return frozenset(n[len(BINARY_PREFIX) :] for n in names if n.startswith(BINARY_PREFIX))


def target_for_arch(arch: str) -> str:
    return ARCH_TO_TARGET.get(arch, arch)


def binary(target: str) -> str:
    return f"{BINARY_DIR}/{BINARY_PREFIX}{target}"


def replacement(domain: Domain, facts: Facts) -> tuple[str, str | None]:
    """(the target libvirt would use for this guest, the one that will exist or None)."""
    wanted = target_for_arch(domain.arch or facts.host_arch)
    if facts.available(wanted):
        return wanted, wanted
    fallback = COMPATIBLE_TARGET.get(wanted)
    if fallback and facts.available(fallback):
        return wanted, fallback
    return wanted, None


def is_wrapper(emulator: Emulator) -> bool:
    return os.path.basename(emulator.text.strip()) in WRAPPERS


def _edit_blocker(domain: Domain, emulator: Emulator) -> str | None:
    """Why kvmhook will not edit this emulator's bytes, or None."""
    if domain.editable:
        return domain.editable
    if emulator.span is None:
        return "the <emulator> holds markup, comments or character references"
    return None


def fixable_wrapper(domain: Domain, facts: Facts) -> bool:
    return replacement(domain, facts)[1] is not None and all(
        _edit_blocker(domain, e) is None for e in domain.emulators if is_wrapper(e)
    )


Check = Callable[[Config, Facts], Iterable[Finding]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def evaluate(config: Config, facts: Facts) -> list[Finding]:
    return [f for fn in CHECKS for f in fn(config, facts)]


def _finding(config: Config, line: int | None, **kw) -> Finding:
    name = config.domain.name if config.domain else None
    return Finding(file=config.path, line=line, domain=name, **kw)


def _grep_lines(config: Config, data: bytes | None) -> tuple[int, ...]:
    """The lines of data on which the qemu ebuild's grep over *.xml matches."""
    if not config.globbed:
        return ()
    if config.mention_lines is not None:
        return config.mention_lines
    return mention_lines(data) if data is not None else ()


def _ebuild_trips(config: Config) -> bool:
    if config.mention_lines is not None and config.globbed:
        return True  # too large to read whole: the ebuild's grep may match past the cap
    return bool(_grep_lines(config, config.data))


@check
def special_entry(config: Config, facts: Facts) -> Iterator[Finding]:
    if config.entry == "file":
        return
    why = {
        "symlink": "a symbolic link; kvmhook neither reads nor writes through it,"
        " but the qemu ebuild's grep follows it",
        "fifo": "a FIFO; the qemu ebuild's grep may block on it",
    }.get(config.entry, f"a {config.entry}, not a regular file; libvirt and kvmhook skip it")
    yield _finding(
        config,
        None,
        kind="not-a-file",
        severity="warning",
        current=None,
        proposed=None,
        message=f"{os.path.basename(config.path)} is {why}",
    )


@check
def unreadable(config: Config, facts: Facts) -> Iterator[Finding]:
    if config.problem_kind in ("unparsable", "unreadable", "not-a-domain"):
        severity = "error" if _ebuild_trips(config) else "warning"
        tail = ""
        if severity == "error":
            tail = "; the qemu ebuild's grep " + (
                "reads all of it: move it out of this folder"
                if config.mention_lines is not None
                else "matches it"
            )
        yield _finding(
            config,
            None,
            kind=config.problem_kind,
            severity=severity,
            current=None,
            proposed=None,
            message=f"{config.problem}; left as it is{tail}",
        )


@check
def wrapper_emulator(config: Config, facts: Facts) -> Iterator[Finding]:
    domain = config.domain
    if domain is None:
        return
    for emulator in domain.emulators:
        if not is_wrapper(emulator):
            continue
        current = emulator.text.strip()
        wanted, target = replacement(domain, facts)
        why = (
            f"{current} is a qemu-kvm wrapper, which Gentoo's qemu has not installed since 2.0:"
            " libvirt cannot start this domain"
        )
        if current == "/usr/bin/qemu-kvm":
            why += ", and the qemu ebuild refuses to merge while a config names it"
        change = None
        if target is None:
            why += (
                f"; {binary(wanted)} will not be installed: enable qemu_softmmu_targets_{wanted}"
                " (QEMU_SOFTMMU_TARGETS) for app-emulation/qemu"
            )
        else:
            if target != wanted:
                why += f"; {binary(wanted)} will not be installed, {binary(target)} runs this guest"
            blocker = _edit_blocker(domain, emulator)
            if blocker:
                why += f"; not fixed automatically: {blocker}; edit it by hand"
            else:
                change = Change("emulator", emulator.index, emulator.text, binary(target))
        yield _finding(
            config,
            emulator.line,
            kind="wrapper-emulator",
            severity="error",
            current=current,
            proposed=binary(target or wanted),
            message=why,
            change=change,
        )


@check
def removed_target(config: Config, facts: Facts) -> Iterator[Finding]:
    if config.domain is None or facts.targets is None:
        return
    for emulator in config.domain.emulators:
        match = _SYSTEM_BINARY.match(emulator.text.strip())
        if match and match.group(1) not in facts.targets:
            target = match.group(1)
            yield _finding(
                config,
                emulator.line,
                kind="removed-target",
                severity="error",
                current=emulator.text.strip(),
                proposed=None,
                message=f"this qemu merge does not install {binary(target)}: enable"
                f" qemu_softmmu_targets_{target} (QEMU_SOFTMMU_TARGETS) for app-emulation/qemu",
            )


@check
def kvm_dropped(config: Config, facts: Facts) -> Iterator[Finding]:
    domain = config.domain
    if domain is None or domain.type != "qemu":
        return
    if not any(is_wrapper(e) for e in domain.emulators):
        return
    why = (
        "the qemu-kvm wrapper forced KVM, but libvirt takes acceleration from <domain type>:"
        " with type='qemu' and a plain qemu-system binary this guest runs under TCG"
        " emulation, tens of times slower"
    )
    fixable = fixable_wrapper(domain, facts) and domain.type_span is not None
    if facts.keep_type:
        message = f"{why}; type='qemu' kept as asked (--keep-type)"
        change = None
    elif fixable:
        message = f"{why}; the fix sets type='kvm' to keep KVM (--keep-type keeps 'qemu')"
        change = Change("type", 0, "qemu", "kvm")
    else:
        message = f"{why}; set type='kvm' when fixing the emulator"
        change = None
    yield _finding(
        config,
        domain.line,
        kind="kvm-dropped",
        severity="warning",
        current="type='qemu'",
        proposed=None if facts.keep_type else "type='kvm'",
        message=message,
        change=change,
    )


@check
def daemon_differs(config: Config, facts: Facts) -> Iterator[Finding]:
    domain = config.domain
    # Name and UUID are copied easily: only a file in the daemon's own folder is its domain.
    held = _held(config, facts)
    if held is None:
        return
    in_file = tuple(e.text.strip() for e in domain.emulators)
    if (held.emulators, held.type) == (in_file, domain.type):
        return
    stale = any(os.path.basename(e) in WRAPPERS for e in held.emulators)
    file_stale = any(is_wrapper(e) for e in domain.emulators)
    current = f"type={held.type!r}, emulator {', '.join(held.emulators) or '(none)'}"
    proposed = f"type={domain.type!r}, emulator {', '.join(in_file) or '(none)'}"
    message = (
        f"libvirt ({facts.daemon}) holds a definition of this domain that differs from the file"
        " (someone edited the file by hand?); the daemon writes its copy back over the file at"
        " the next --config change (virsh desc/setmaxmem --config, virt-manager)"
    )
    change = None
    if stale and not file_stale:
        message += "; the fix makes the daemon take the file's definition"
        change = Change("daemon", 0, current, proposed)
    else:
        message += f"; to keep the file's version: virsh -c {facts.daemon} define {config.path}"
    yield _finding(
        config,
        domain.emulators[0].line if domain.emulators else domain.line,
        kind="daemon-differs",
        severity="error" if stale else "warning",
        current=current,
        proposed=proposed,
        message=message,
        change=change,
    )


def _held(config: Config, facts: Facts):
    """What the daemon holds of this config's domain: only for a file in its own folder."""
    domain = config.domain
    if facts.held is None or domain is None or not domain.uuid or config.folder is None:
        return None
    if config.folder.identity != facts.daemon_folder:
        return None
    held = facts.held.get(domain.uuid.lower())
    return held if held is not None and held.name == domain.name else None


_NEW_HARDWARE = (
    "the guest then sees the hardware of that version (Windows may re-detect devices or ask"
    " to be activated again)"
)


def _upstream(prefix: str, facts: Facts) -> str | None:
    """The newest type of the family that the installed and the pending QEMU both have:
    the running daemon accepts it now, and the guest starts after the merge. None when
    either release is unknown."""
    if facts.qemu_now is None or facts.pending is None:
        return None
    return qemu.newest_common(prefix, facts.qemu_now, facts.pending)


@check
def machine_type(config: Config, facts: Facts) -> Iterator[Finding]:
    domain = config.domain
    if domain is None or not domain.machine or facts.pending is None:
        return
    machine, pending = domain.machine, facts.pending
    verdict = qemu.verdict(machine, pending)
    line = domain.line
    show = qemu.show
    if verdict.status == "removed":
        prefix = qemu.family(machine)[0]
        proposed = _upstream(prefix, facts)
        held = _held(config, facts)
        why = (
            f"QEMU {show(pending)} no longer has machine type {machine} (QEMU"
            f" {show(verdict.release)} removed it): libvirt will not start this domain after"
            " the merge, and saved state cannot be restored"
        )
        if held is not None and held.active:
            why += "; it is running now and keeps running until its next cold start"
        saved = (facts.saved or {}).get(domain.name or "", ())
        change = None
        if proposed is None:
            why += (
                "; no type of this family is in both the installed and the pending QEMU: merge,"
                " then run 'kvmhook fix --machines' before the guest's next start"
            )
        elif not facts.update_machines:
            why += f"; 'kvmhook fix --machines' moves it to {proposed}: {_NEW_HARDWARE}"
        elif held is not None and held.active:
            why += f"; not moved to {proposed} while it runs: shut it down, then fix again"
        elif saved:
            why += (
                f"; not moved to {proposed} while it has saved state: resume it and shut it"
                " down cleanly, then fix again"
            )
        else:
            why += f"; the fix moves it to {proposed}: {_NEW_HARDWARE}"
            change = Change("machine", 0, machine, proposed)
        yield _finding(
            config,
            line,
            kind="removed-machine",
            severity="error",
            current=machine,
            proposed=proposed,
            message=why,
            change=change,
        )
    elif verdict.status == "deprecated":
        due = f", and goes in QEMU {show(verdict.release)}" if verdict.release else ""
        proposed = _upstream(qemu.family(machine)[0], facts)
        move = f"; {proposed} is the newest type both QEMUs have" if proposed else ""
        yield _finding(
            config,
            line,
            kind="deprecated-machine",
            severity="warning",
            current=machine,
            proposed=proposed,
            message=f"QEMU {show(pending)} marks machine type {machine} deprecated{due}{move}",
        )
    elif verdict.status == "foreign":
        proposed = _upstream(qemu.foreign_family(machine), facts)
        yield _finding(
            config,
            line,
            kind="foreign-machine",
            severity="warning",
            current=machine,
            proposed=proposed,
            message=f"{machine} is not an upstream QEMU machine type (a distribution's, from an"
            " imported domain?): Gentoo's QEMU may not start it"
            + (f"; the upstream type of its family is {proposed}" if proposed else ""),
        )


@check
def saved_state(config: Config, facts: Facts) -> Iterator[Finding]:
    domain = config.domain
    if domain is None or facts.pending is None or not facts.saved:
        return
    paths = facts.saved.get(domain.name or "", ())
    if not paths:
        return
    gone = bool(domain.machine) and qemu.verdict(domain.machine, facts.pending).status == "removed"
    for path in paths:
        what = "a managed-save image" if path.endswith(".save") else "a snapshot with memory"
        why = (
            f"machine type {domain.machine} is not in QEMU {qemu.show(facts.pending)}, which"
            " cannot restore it"
            if gone
            else f"QEMU {qemu.show(facts.pending)} may not restore state saved by another version"
        )
        yield _finding(
            config,
            None,
            kind="saved-state",
            severity="error" if gone else "warning",
            current=path,
            proposed=None,
            message=f"{what} ({path}): {why}; before the merge, resume the guest (virsh start"
            f" {domain.name}) and shut it down cleanly",
        )


_FINDING_STATUSES = ("removed", "deprecated", "foreign")


def plainly_clean(data: bytes, facts: Facts) -> bool:
    """Whether the bytes alone show that no check can find anything in this file: no
    daemon to compare with, no saved state, no qemu-kvm string, an ASCII-compatible
    encoding, every <emulator> a plain path that names neither a wrapper nor a dropped
    target, and no machine type with a finding. Any doubt is False: the full parse decides.
    (The caller still proves the file well-formed with a root <domain>.)"""
    if facts.held is not None or facts.saved:
        return False
    if NEEDLE in data or data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        return False
    pos = data.find(b"<emulator")
    while pos != -1:
        if data[pos + 9 : pos + 10] != b">":
            return False
        end = data.find(b"</emulator", pos)
        text = data[pos + 10 : end]
        if end == -1 or b"<" in text or b"&" in text or not text.isascii():
            return False
        path = text.strip(b" \t\r\n").decode()
        if os.path.basename(path) in WRAPPERS:
            return False
        binary = path.removeprefix(BINARY_DIR + "/" + BINARY_PREFIX)
        if facts.targets is not None and binary != path and binary not in facts.targets:
            return False
        pos = data.find(b"<emulator", end)
    if facts.pending is not None:
        pos = data.find(b"machine")
        while pos != -1:
            after = data[pos + 7 : pos + 9]
            if after[:1] == b"=" and after[1:2] in (b"'", b'"'):
                end = data.find(after[1:2], pos + 9)
                value = data[pos + 9 : end]
                if end == -1 or not value.isascii():
                    return False
                if qemu.verdict(value.decode(), facts.pending).status in _FINDING_STATUSES:
                    return False
            elif after[:1] in (b" ", b"\t", b"\r", b"\n", b"="):
                return False  # spaced or odd: not read here
            pos = data.find(b"machine", pos + 7)
    return True


def leftover_mentions(config: Config, data_after_fix: bytes | None) -> list[Finding]:
    """The qemu ebuild's own check, run on what the file will hold after the fix."""
    return [
        _finding(
            config,
            line,
            kind="grep-match",
            severity="error",
            current="/usr/bin/qemu-kvm",
            proposed=None,
            message="the qemu ebuild's pkg_pretend greps every *.xml here for /usr/bin/qemu-kvm"
            " and dies on this line, which is not an <emulator> kvmhook rewrites"
            " (a comment, a description, metadata or a damaged file): edit it by hand",
        )
        for line in _grep_lines(config, data_after_fix)
    ]
