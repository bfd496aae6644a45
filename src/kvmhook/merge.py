"""What the pending app-emulation/qemu merge installs: from the command line, from
portage for ROOT, or failing both, from the binaries the installed qemu left."""

from __future__ import annotations

import os
from collections import namedtuple

from . import qemu

QEMU = "app-emulation/qemu"
TARGET_FLAG = "qemu_softmmu_targets_"


class Merge(namedtuple("Merge", "installed pending targets source known note")):
    """installed: the qemu versions in ROOT's vardb (() when not known); pending: the version
    'emerge --update app-emulation/qemu' picks, or None; targets: the QEMU_SOFTMMU_TARGETS it
    installs, or None when not known (then ROOT/usr/bin decides); source: where the targets
    came from; known: the target names the pending ebuild offers, or None; note: why
    portage told nothing, or ''."""

    __slots__ = ()

    def as_json(self) -> dict:
        return {
            "installed": list(self.installed),
            "pending": self.pending,
            "targets": sorted(self.targets) if self.targets is not None else None,
            "source": self.source,
        }

    def line(self, root: str) -> str:
        """One line saying what kvmhook takes the merge to be, and from where."""
        installed = ", ".join(f"{QEMU}-{v}" for v in self.installed)
        parts = [f"{installed} installed" if installed else f"{QEMU}: no installed version known"]
        parts.append(f"{self.pending} pending" if self.pending else "pending version unknown")
        if self.targets is not None:
            where = {"options": "the command line", "portage": "portage"}[self.source]
            parts.append(f"targets {' '.join(sorted(self.targets)) or '(none)'} (from {where})")
        else:
            usr_bin = os.path.join(root, "usr/bin")
            parts.append(f"targets: the qemu-system-* binaries in {usr_bin}")
        text = ", ".join(parts)
        return f"{text} ({self.note})" if self.note else text


def is_gentoo(root: str) -> bool:
    return os.path.isdir(os.path.join(root, "etc/portage")) and os.path.isdir(
        os.path.join(root, "var/db/pkg")
    )


def from_portage(
    root: str,
) -> tuple[tuple[str, ...], str | None, frozenset[str] | None, frozenset[str] | None]:
    """(installed versions, pending version, its targets, the targets it offers) for ROOT,
    as portage computes them: the best visible version in the configured repositories
    (package.mask, package.accept_keywords, the profile) and its effective USE (make.conf,
    package.use, the profile). Raises ImportError without portage."""
    import contextlib
    import io

    import portage
    from portage.versions import cpv_getversion

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TERM", "LANG")}
    with contextlib.redirect_stderr(io.StringIO()):  # portage's warnings about other repos
        trees = portage.create_trees(config_root=root, target_root=root, env=env, eprefix="")
        tree = trees[trees._target_eroot]
        installed = tuple(cpv_getversion(c) for c in tree["vartree"].dbapi.match(QEMU))
        portdb = tree["porttree"].dbapi
        best = portdb.xmatch("bestmatch-visible", QEMU)
        if not best:
            return installed, None, None, None
        settings = portage.config(clone=portdb.settings)
        settings.setcpv(best, mydb=portdb)
        use = settings["PORTAGE_USE"].split()
        iuse = portdb.aux_get(best, ["IUSE"])[0].split()
    targets = frozenset(f[len(TARGET_FLAG) :] for f in use if f.startswith(TARGET_FLAG))
    offered = frozenset(
        f.lstrip("+-")[len(TARGET_FLAG) :] for f in iuse if f.lstrip("+-").startswith(TARGET_FLAG)
    )
    return installed, cpv_getversion(best), targets, offered or None


def facts(
    root: str, targets: frozenset[str] | None, version: str | None, ask_portage: bool = True
) -> Merge:
    """The merge as the command line says it, with what it leaves out from portage when
    ROOT is a Gentoo system (checked before portage is imported). Options always win."""
    note = ""
    installed: tuple[str, ...] = ()
    pending, known = version, None
    if ask_portage and (targets is None or version is None):
        if not is_gentoo(root):
            note = f"{root} is not a Gentoo system: no etc/portage and var/db/pkg there"
        else:
            try:
                installed, found, found_targets, known = from_portage(root)
            except ImportError:
                note = "portage cannot be imported by this Python"
            except Exception as err:  # a broken portage config is a note, not the end
                note = f"portage could not tell ({type(err).__name__}: {err})"
            else:
                pending = version or found
                if targets is None and found is not None:
                    return Merge(installed, pending, found_targets, "portage", known, "")
    source = "options" if targets is not None else "ROOT/usr/bin"
    return Merge(installed, pending, targets, source, known, note)


def unknown_target(name: str, known: frozenset[str] | None) -> str | None:
    """Why name is not a QEMU softmmu target (with the closest name), or None."""
    valid = known or qemu.QEMU_TARGETS
    if name in valid:
        return None
    import difflib

    guess = name[len(TARGET_FLAG) :] if name.startswith(TARGET_FLAG) else None
    if guess not in valid:
        close = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
        guess = close[0] if close else None
    hint = f"; did you mean {guess}?" if guess else f"; known: {' '.join(sorted(valid))}"
    return f"{name!r} is not a QEMU softmmu target{hint}"
