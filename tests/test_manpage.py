"""kvmhook(1): it renders without warnings and names every command, option, choice, exit
status and environment variable that the program has."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmhook import __main__ as cli
from kvmhook import __version__

TOP = Path(__file__).resolve().parents[1]
PAGE = TOP / "man" / "kvmhook.1"
SOURCE = PAGE.read_text()
SNIPPET = (TOP / "bashrc.d" / "kvmhook.sh").read_text()


def rendered() -> str:
    proc = subprocess.run(
        [shutil.which("groff") or "groff", "-man", "-Tutf8", "-ww", "-rLL=80n", str(PAGE)],
        capture_output=True,
        text=True,
        env=dict(os.environ, LC_ALL="C.UTF-8"),
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return re.sub(r".\x08", "", proc.stdout)  # overstrike bold and underline


def subparsers() -> dict:
    return cli.build_parser()._subparsers._group_actions[0].choices


def test_groff_renders_it_without_warnings():
    text = rendered()
    assert text.startswith("KVMHOOK(1)") and "EXIT STATUS" in text


@pytest.mark.skipif(not shutil.which("man"), reason="man-db is not installed")
def test_man_renders_it_without_warnings():
    proc = subprocess.run(
        ["man", "--warnings", "-l", str(PAGE)],
        capture_output=True,
        text=True,
        env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8"),
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert re.search(r"kvmhook\s+-\s+check and safely fix", proc.stdout)


def test_it_names_every_command_and_option():
    text = rendered()
    synopsis = text.split("\nSYNOPSIS\n")[1].split("\nDESCRIPTION\n")[0]
    for name, parser in subparsers().items():
        assert re.search(rf"^       {re.escape(name)}\b", text, re.M), f"no entry for {name}"
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", synopsis), f"{name}: not in SYNOPSIS"
        for action in parser._actions:
            for option in action.option_strings:
                assert re.search(rf"^       {re.escape(option)}\b", text, re.M) or (
                    option in ("-h", "--help") and "-h, --help" in text
                ), f"{name} {option} has no entry"
                if action.choices:
                    for choice in action.choices:
                        assert re.search(rf"\b{choice}\b", text), f"{option} {choice}"
    for option in ("--version", "--help"):
        assert option in text


def test_it_names_every_exit_status():
    text = rendered()
    section = text.split("\nEXIT STATUS\n")[1].split("ENVIRONMENT")[0]
    codes = {cli.EXIT_OK, cli.EXIT_FINDINGS, cli.EXIT_FAILED, cli.HOOK_STOP}
    assert {int(c) for c in re.findall(r"^       (\d+)\s", section, re.M)} == codes


def test_it_names_every_setting_of_the_snippet_and_every_mode():
    text = rendered()
    settings = set(re.findall(r"\bKVMHOOK_[A-Z]+\b", SNIPPET))
    assert settings == {"KVMHOOK_MODE", "KVMHOOK_MACHINES", "KVMHOOK_PYTHON"}
    section = text.split("\nENVIRONMENT\n")[1].split("\nFILES\n")[0]
    for name in settings | {"LIBVIRT_DEFAULT_URI", "NO_COLOR"}:
        assert re.search(rf"^       {name}$", section, re.M), name
    modes = re.search(r"explain\|fix\|warn\|off", SNIPPET)
    assert modes, "the snippet's modes moved"
    hook_section = text.split("\nTHE PORTAGE HOOK\n")[1].split("EXIT STATUS")[0]
    for mode in ("explain", "fix", "warn", "off", "stop", "update"):
        assert re.search(rf"^       {mode}\b", hook_section, re.M), mode


def test_it_names_the_files_kvmhook_uses():
    from kvmhook import domains, hook, store

    text = rendered()
    for path in (
        "/" + domains.SYSTEM_FOLDER,
        "~/" + domains.SESSION_FOLDER,
        "/" + store.STATE_DIR,
        "~/" + store.USER_STATE_DIR,
        hook.SYSTEM_SNIPPET,
        "/etc/portage/bashrc",
    ):
        assert path in text, path


def test_the_version_is_the_programs():
    assert f'"kvmhook {__version__}"' in SOURCE
