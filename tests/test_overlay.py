"""The overlay in ebuild/: layout, metadata, and what the ebuilds' phases do."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from lxml import etree

TOP = Path(__file__).resolve().parents[1]
OVERLAY = TOP / "ebuild"
PACKAGE = OVERLAY / "app-portage/kvmhook"
VERSION = tomllib.loads((TOP / "pyproject.toml").read_text())["project"]["version"]
EBUILDS = [PACKAGE / f"kvmhook-{VERSION}.ebuild", PACKAGE / "kvmhook-9999.ebuild"]

# Just enough of the eclasses for bash to source an ebuild and run its own phases.
STUBS = """
inherit() { echo "inherit $*"; }
distutils_enable_tests() { echo "tests $1"; }
distutils-r1_src_install() { echo "distutils install"; }
insinto() { dest=$1; }
doins() { mkdir -p "${D}${dest}" && cp "$@" "${D}${dest}/"; }
elog() { echo "elog $*"; }
"""


def test_overlay_layout():
    assert (OVERLAY / "profiles/repo_name").read_text() == "kvmhook\n"
    layout = (OVERLAY / "metadata/layout.conf").read_text().splitlines()
    assert "masters = gentoo" in layout
    root = etree.parse(str(PACKAGE / "metadata.xml")).getroot()
    assert root.tag == "pkgmetadata" and root.find("maintainer/email") is not None
    assert {p.name for p in PACKAGE.glob("*.ebuild")} == {p.name for p in EBUILDS}


@pytest.mark.parametrize("ebuild", EBUILDS, ids=lambda p: p.name)
def test_ebuild_metadata(ebuild):
    script = (
        STUBS
        + f"source {ebuild}\n"
        + 'echo "EAPI=$EAPI"; echo "PEP517=$DISTUTILS_USE_PEP517"\n'
        + 'echo "COMPAT=${PYTHON_COMPAT[*]}"; echo "RDEPEND=${RDEPEND//$\'\\n\'/ }"\n'
        + "declare -F src_install pkg_postinst\n"
    )
    out = subprocess.run(
        ["bash", "-c", script], env={"PYTHON_USEDEP": "PYUSE"}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "EAPI=8" in lines and "PEP517=setuptools" in lines
    assert "tests pytest" in lines
    inherit = next(line for line in lines if line.startswith("inherit "))
    assert "distutils-r1" in inherit
    assert ("git-r3" in inherit) == ebuild.name.endswith("9999.ebuild")
    compat = next(line for line in lines if line.startswith("COMPAT=")).split("=", 1)[1]
    assert "python3_{11..13}" in compat or "python3_11" in compat
    rdepend = next(line for line in lines if line.startswith("RDEPEND="))
    assert "dev-python/lxml[PYUSE]" in rdepend and "sys-apps/portage[PYUSE]" in rdepend
    assert {"src_install", "pkg_postinst"} <= set(lines)


@pytest.mark.parametrize("ebuild", EBUILDS, ids=lambda p: p.name)
def test_ebuild_installs_the_snippet_and_says_how_to_wire_it(ebuild, tmp_path):
    image = tmp_path / "image"
    script = STUBS + f"source {ebuild}\ncd {TOP}\nsrc_install\npkg_postinst\n"
    out = subprocess.run(
        ["bash", "-c", script], env={"D": str(image)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    installed = image / "usr/share/kvmhook/kvmhook.sh"
    assert installed.read_bytes() == (TOP / "bashrc.d/kvmhook.sh").read_bytes()
    assert "distutils install" in out.stdout
    assert "elog   kvmhook install-hook" in out.stdout
    assert "KVMHOOK_MODE=fix" in out.stdout


def test_sdist_carries_what_the_ebuild_installs():
    manifest = (TOP / "MANIFEST.in").read_text().splitlines()
    assert "include bashrc.d/kvmhook.sh" in manifest
    snippet = TOP / "src/kvmhook/kvmhook.sh"
    assert snippet.resolve() == (TOP / "bashrc.d/kvmhook.sh").resolve()
