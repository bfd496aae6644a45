"""The bash completion (completions/kvmhook), driven in a real bash and checked against the
argument parser and the list of QEMU targets."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kvmhook import qemu
from kvmhook.__main__ import build_parser

SCRIPT = Path(__file__).resolve().parents[1] / "completions" / "kvmhook"
BASH = shutil.which("bash") or "/bin/bash"

# Complete the words given as arguments, the last being the one under the cursor.
DRIVER = """source "$0" || exit 9
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
_kvmhook kvmhook "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\\n' "${COMPREPLY[@]}"
"""


def complete(*words: str) -> list[str]:
    proc = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", DRIVER, str(SCRIPT), "kvmhook", *words],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in proc.stdout.splitlines() if line]


def subparsers() -> dict:
    return build_parser()._subparsers._group_actions[0].choices


def long_options(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def test_bash_registers_the_function():
    proc = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", f'source "{SCRIPT}" && complete -p kvmhook'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "complete -F _kvmhook kvmhook"


def test_f_completes_to_fix():
    assert complete("f") == ["fix"]


def test_targets_x86_completes_to_x86_64():
    assert complete("check", "--targets", "x86") == ["x86_64"]
    assert complete("fix", "--targets", "x86_64,aa") == ["x86_64,aarch64"]


def test_the_targets_are_qemus():
    assert set(complete("check", "--targets", "")) == set(qemu.QEMU_TARGETS)


def test_the_commands_are_the_parsers():
    assert set(complete("")) == set(subparsers())


@pytest.mark.parametrize("command", sorted(subparsers()))
def test_each_commands_options_are_the_parsers(command):
    assert set(complete(command, "--")) == long_options(subparsers()[command])


def test_the_top_level_options_are_the_parsers():
    assert set(complete("--")) == long_options(build_parser())


def test_choices_are_the_parsers():
    hook = {a.dest: a for a in subparsers()["hook"]._actions}
    assert complete("hook", "--mode", "") == list(hook["mode"].choices)
    assert complete("hook", "--machines", "") == list(hook["machines"].choices)
    assert complete("hook", "--mode", "f") == ["fix"]
    # fix's --machines is a flag: the next word is an option or nothing
    assert complete("fix", "--machines", "--d") == ["--dry-run"]
