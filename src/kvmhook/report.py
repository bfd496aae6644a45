"""Rendering findings as portage-style text or as one JSON document."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from .findings import Finding

SCHEMA = 1
_COLOURS = {"error": "\033[31;01m", "warning": "\033[33;01m", "info": "\033[32;01m"}
_RESET = "\033[0m"


def use_colour(stream) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def _star(level: str, colour: bool) -> str:
    return f" {_COLOURS[level]}*{_RESET} " if colour else " * "


def _where(f: Finding) -> str:
    place = f"{f.file}:{f.line}" if f.line is not None else f.file
    return f"{place} (domain {f.domain})" if f.domain else place


def finding_block(f: Finding, fix_command: str, colour: bool = False) -> list[str]:
    star = _star(f.severity, colour)
    lines = [f"{star}{f.severity.upper()}: {_where(f)} [{f.kind}]"]
    if f.current is not None or f.proposed is not None:
        lines.append(f"{star}  {f.current or '-'} -> {f.proposed or '(no automatic fix)'}")
    lines.append(f"{star}  {f.message}")
    if f.fixable:
        lines.append(f"{star}  fix: {fix_command}")
    return lines


def change_line(f: Finding, colour: bool = False) -> str:
    return f"{_star('info', colour)}Fixed {_where(f)}: {f.current} -> {f.proposed}"


def info(text: str, colour: bool = False) -> str:
    return f"{_star('info', colour)}{text}"


def summary(findings: Sequence[Finding], colour: bool = False) -> str:
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if not findings:
        return info("No stale emulator references found.", colour)
    level = "error" if errors else "warning"
    return f"{_star(level, colour)}{errors} error(s), {warnings} warning(s)."


def render_text(
    findings: Sequence[Finding],
    fix_command: str,
    colour: bool = False,
    head: Sequence[str] = (),
) -> str:
    lines = list(head)
    for f in findings:
        lines += finding_block(f, fix_command, colour)
    lines.append(summary(findings, colour))
    return "\n".join(lines) + "\n"


def render_json(
    root: str,
    findings: Sequence[Finding],
    fixed: Sequence[str] = (),
    backup: str | None = None,
    **extra: object,
) -> str:
    doc = {
        "schema": SCHEMA,
        "root": root,
        "findings": [f.as_json() for f in findings],
        "fixed": list(fixed),
        "backup": backup,
    }
    doc.update(extra)
    return json.dumps(doc, indent=2) + "\n"
