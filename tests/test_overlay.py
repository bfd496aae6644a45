"""The overlay in ebuild/: layout, metadata, and what the ebuilds' phases do."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import domain_xml
from lxml import etree

from kvmhook import __version__

TOP = Path(__file__).resolve().parents[1]
OVERLAY = TOP / "ebuild"
PACKAGE = OVERLAY / "app-portage/kvmhook"
VERSION = __version__
EBUILDS = [PACKAGE / f"kvmhook-{VERSION}.ebuild", PACKAGE / "kvmhook-9999.ebuild"]

# Just enough of the eclasses for bash to source an ebuild and run its own phases.
STUBS = """
inherit() { echo "inherit $*"; }
distutils_enable_tests() { echo "tests $1"; }
distutils-r1_src_install() { echo "distutils install"; }
insinto() { dest=$1; }
doins() { mkdir -p "${D}${dest}" && cp "$@" "${D}${dest}/"; }
doman() { mkdir -p "${D}/usr/share/man/man1" && cp "$@" "${D}/usr/share/man/man1/"; }
dobashcomp() {
	mkdir -p "${D}/usr/share/bash-completion/completions" &&
		cp "$@" "${D}/usr/share/bash-completion/completions/"
}
elog() { echo "elog $*"; }
die() { echo "die $*" >&2; exit 1; }
"""


def test_overlay_layout():
    assert (OVERLAY / "profiles/repo_name").read_text() == "kvmhook\n"
    layout = (OVERLAY / "metadata/layout.conf").read_text().splitlines()
    assert "masters = gentoo" in layout
    root = etree.parse(str(PACKAGE / "metadata.xml")).getroot()
    assert root.tag == "pkgmetadata" and root.find("maintainer/email") is not None
    assert {p.name for p in PACKAGE.glob("*.ebuild")} == {p.name for p in EBUILDS}


def test_one_body_for_the_release_and_the_live_ebuild():
    assert EBUILDS[0].read_bytes() == EBUILDS[1].read_bytes()


@pytest.mark.parametrize("ebuild", EBUILDS, ids=lambda p: p.name)
def test_ebuild_metadata(ebuild, tmp_path):
    # the overlay's ebuilds are sourced under the name portage gives them
    named = tmp_path / ebuild.name
    named.write_bytes(ebuild.read_bytes())
    pv = ebuild.name.removeprefix("kvmhook-").removesuffix(".ebuild")
    script = (
        STUBS
        + f"PV={pv}\nsource {named}\n"
        + 'echo "EAPI=$EAPI"; echo "PEP517=$DISTUTILS_USE_PEP517"\n'
        + 'echo "COMPAT=${PYTHON_COMPAT[*]}"; echo "RDEPEND=${RDEPEND//$\'\\n\'/ }"\n'
        + 'echo "PLUGINS=${EPYTEST_PLUGINS[*]}"; echo "KEYWORDS=${KEYWORDS}"\n'
        + "declare -F src_install pkg_postinst\n"
    )
    out = subprocess.run(
        ["bash", "-c", script], env={"PYTHON_USEDEP": "PYUSE"}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "EAPI=8" in lines and "PEP517=setuptools" in lines
    assert "tests pytest" in lines and "PLUGINS=hypothesis" in lines
    inherits = " ".join(line for line in lines if line.startswith("inherit "))
    assert "distutils-r1" in inherits and "optfeature" in inherits
    assert "shell-completion" in inherits
    live = pv == "9999"
    assert ("git-r3" in inherits) == live and ("pypi" in inherits) != live
    assert ("KEYWORDS=" in lines) == live  # the live ebuild has no keywords
    # today's targets: 3.11 is gone, the default 3.14 is in
    assert "COMPAT=python3_12 python3_13 python3_14 python3_15" in lines
    rdepend = next(line for line in lines if line.startswith("RDEPEND="))
    assert "dev-python/lxml[PYUSE]" in rdepend and "sys-apps/portage[PYUSE]" in rdepend
    assert {"src_install", "pkg_postinst"} <= set(lines)


def installed_image(tmp_path: Path) -> tuple[Path, str]:
    image, prefix = tmp_path / "image", tmp_path / "prefix"
    script = STUBS + f"EPREFIX={prefix}\nT={tmp_path}\nsource {EBUILDS[1]}\ncd {TOP}\nsrc_install\n"
    out = subprocess.run(
        ["bash", "-c", script], env={"D": str(image)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return image, out.stdout


def test_ebuild_installs_a_snippet_that_runs_the_kvmhook_command(tmp_path):
    image, out = installed_image(tmp_path)
    assert "distutils install" in out
    # the man page and the bash completion, as the repository holds them
    man = image / "usr/share/man/man1/kvmhook.1"
    assert man.read_bytes() == (TOP / "man/kvmhook.1").read_bytes()
    completion = image / "usr/share/bash-completion/completions/kvmhook"
    assert completion.read_bytes() == (TOP / "completions/kvmhook").read_bytes()
    installed = (image / "usr/share/kvmhook/kvmhook.sh").read_text()
    original = (TOP / "bashrc.d/kvmhook.sh").read_text()
    entry = tmp_path / "prefix/usr/bin/kvmhook"
    assert installed == original.replace("\t__kvmhook_entry=\n", f"\t__kvmhook_entry={entry}\n")
    # python-exec's kvmhook, standing in: this installation, however python3 is set up
    entry.parent.mkdir(parents=True)
    entry.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -m kvmhook "$@"\n')
    entry.chmod(0o755)
    root = tmp_path / "root"
    (root / "etc/libvirt/qemu").mkdir(parents=True)
    (root / "etc/libvirt/qemu/vm.xml").write_bytes(domain_xml())
    functions = "".join(f'{f}() {{ echo "{f}: $*"; }}\n' for f in ("eerror", "ewarn", "einfo"))
    snippet = image / "usr/share/kvmhook/kvmhook.sh"
    script = f'{functions}die() {{ echo "die: $*"; }}\nsource {snippet}\npre_pkg_pretend\n'
    env = {
        "PATH": "/usr/bin:/bin",
        "EBUILD_PHASE": "pretend",
        "CATEGORY": "app-emulation",
        "PN": "qemu",
        "PV": "10.1.0",
        "EROOT": str(root),
        "QEMU_SOFTMMU_TARGETS": "x86_64",
    }
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert "eerror: kvmhook: 1 libvirt domain config(s)" in proc.stdout, proc.stdout
    assert "die: kvmhook:" in proc.stdout


@pytest.mark.parametrize("replacing", ["", "0.0.9"], ids=["first install", "upgrade"])
def test_postinst_says_how_to_wire_the_hook_on_a_first_install_only(replacing):
    script = (
        STUBS
        + 'optfeature() { echo "optfeature $*"; }\n'
        + f"REPLACING_VERSIONS={replacing}\nsource {EBUILDS[0]}\npkg_postinst\n"
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "dev-python/libvirt-python" in out.stdout  # optfeature, every time
    assert ("kvmhook install-hook" in out.stdout) == (not replacing)


def test_release_is_reproducible_and_its_manifest_names_the_sdist(tmp_path):
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764460800"}
    built = []
    for run in ("a", "b"):
        overlay = tmp_path / f"overlay-{run}"
        shutil.copytree(OVERLAY, overlay)
        (overlay / "app-portage/kvmhook/Manifest").unlink(missing_ok=True)
        proc = subprocess.run(
            [
                sys.executable,
                str(TOP / "scripts/release"),
                "--out",
                str(tmp_path / run),
                "--overlay",
                str(overlay),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        sdist = tmp_path / run / f"kvmhook-{VERSION}.tar.gz"
        built.append(sdist.read_bytes())
        manifest = (overlay / "app-portage/kvmhook/Manifest").read_text()
        data = sdist.read_bytes()
        assert manifest == (
            f"DIST {sdist.name} {len(data)} BLAKE2B {hashlib.blake2b(data).hexdigest()}"
            f" SHA512 {hashlib.sha512(data).hexdigest()}\n"
        )
    assert built[0] == built[1]
    # the sdist carries what the ebuild's src_install and tests need
    with tarfile.open(tmp_path / "a" / f"kvmhook-{VERSION}.tar.gz") as tar:
        names = set(tar.getnames())
    assert f"kvmhook-{VERSION}/bashrc.d/kvmhook.sh" in names
    assert f"kvmhook-{VERSION}/tests/conftest.py" in names


PKGCHECK = TOP.parent / "shared/tools/pkgcheck-overlay"


@pytest.mark.skipif(not PKGCHECK.exists() and not os.environ.get("CI"), reason="no ../shared")
def test_pkgcheck_finds_nothing_against_todays_gentoo():
    proc = subprocess.run(
        [str(PKGCHECK), str(OVERLAY)], capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [line for line in proc.stdout.splitlines() if line.strip()]
    assert results == [], proc.stdout  # no error and no warning


def test_sdist_carries_what_the_ebuild_installs():
    manifest = (TOP / "MANIFEST.in").read_text().splitlines()
    assert "include bashrc.d/kvmhook.sh" in manifest
    snippet = TOP / "src/kvmhook/kvmhook.sh"
    assert snippet.resolve() == (TOP / "bashrc.d/kvmhook.sh").resolve()
