"""The README's commands are the ones CI runs; lint and the benchmark's smoke run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from kvmhook.__main__ import build_parser

TOP = Path(__file__).resolve().parents[1]
README = (TOP / "README.md").read_text()


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", text, re.S)


def test_ci_runs_exactly_the_readmes_test_command():
    install, tests = sh_blocks(README)[:2]
    assert "\n" not in tests and "\n" not in install  # one command each
    for needed in ("apt-get update", "apt-get install -y", " gcc ", "python3-venv", "pytest"):
        assert needed in tests
    ci_lines = (TOP / ".ci/run").read_text().splitlines()
    assert any(line.startswith(tests) for line in ci_lines), "README and .ci/run differ"
    assert "kvmhook install-hook" in install and "package.accept_keywords" in install


def test_readme_lists_every_command_and_exit_status():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    for name in commands:
        assert f"kvmhook {name}" in README or f"| {name}" in README or f" {name} " in README, name
    for status in range(4):
        assert f"\n| {status} |" in README, status


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run(
        [str(ruff), "check", "src", "tests", "scripts/release", "ansible"],
        cwd=TOP,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_benchmark_smoke_run_works():
    proc = subprocess.run(
        [sys.executable, str(TOP / "scripts/bench"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio" in proc.stdout or "x" in proc.stdout
