"""Rendering findings as portage-style text or as one JSON document."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .findings import Finding

TYPE_CHECKING = False  # typing itself costs 3 ms at start
if TYPE_CHECKING:
    from .api import Result

SCHEMA = 1
_COLOURS = {"error": "\033[31;01m", "warning": "\033[33;01m", "info": "\033[32;01m"}
_RESET = "\033[0m"


# Control characters in names and paths would start new lines or steer the terminal.
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def clean(text: object) -> str:
    """text with every control character written as an escape: one line, inert."""
    return str(text).translate(_ESCAPES)


def for_portage(line: str) -> str:
    """A 'function text' line for the snippet: portage's eerror runs the text through
    echo -e, so backslashes are doubled after escaping."""
    function, _, text = line.partition(" ")
    return f"{function} {clean(text).replace(chr(92), chr(92) * 2)}"


def clean_diff(diff: str) -> str:
    """A diff for the terminal: line ends and tabs kept, other control characters escaped."""
    keep = {ord("\n"): "\n", ord("\t"): "\t"}
    return diff.translate({**_ESCAPES, **keep})


def use_colour(stream) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def _star(level: str, colour: bool) -> str:
    return f" {_COLOURS[level]}*{_RESET} " if colour else " * "


def _where(f: Finding) -> str:
    place = f"{f.file}:{f.line}" if f.line is not None else f.file
    return f"{place} (domain {f.domain})" if f.domain else place


def finding_block(f: Finding, fix_command: str, colour: bool = False) -> list[str]:
    star = _star(f.severity, colour)
    lines = [f"{f.severity.upper()}: {_where(f)} [{f.kind}]"]
    if f.current is not None or f.proposed is not None:
        lines.append(f"  {f.current or '-'} -> {f.proposed or '(no automatic fix)'}")
    lines.append(f"  {f.message}")
    if f.fixable:
        lines.append(f"  fix: {fix_command}")
    return [f"{star}{clean(line)}" for line in lines]


def change_line(f: Finding, colour: bool = False) -> str:
    return info(f"Fixed {_where(f)}: {f.current} -> {f.proposed}", colour)


def info(text: str, colour: bool = False) -> str:
    return f"{_star('info', colour)}{clean(text)}"


def summary(findings: Sequence[Finding], colour: bool = False, clean: str = "") -> str:
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if not findings:
        return info(clean or "No stale emulator references found.", colour)
    level = "error" if errors else "warning"
    return f"{_star(level, colour)}{errors} error(s), {warnings} warning(s)."


def scanned_text(scanned: Sequence[tuple[str, int]]) -> str:
    """'N in FOLDER, ...': how many configs were read where."""
    return ", ".join(f"{n} in {folder}" for folder, n in scanned)


def render_text(
    findings: Sequence[Finding],
    fix_command: str,
    colour: bool = False,
    head: Sequence[str] = (),
    clean: str = "",
) -> str:
    lines = list(head)
    for f in findings:
        lines += finding_block(f, fix_command, colour)
    lines.append(summary(findings, colour, clean))
    return "\n".join(lines) + "\n"


class _JsonEscapes(dict):
    """What json.dumps (ensure_ascii) writes for each character outside printable ASCII."""

    def __missing__(self, code: int) -> str:
        if code >= 0x10000:  # a surrogate pair
            low = code - 0x10000
            text = f"\\u{0xD800 | low >> 10 & 0x3FF:04x}\\u{0xDC00 | low & 0x3FF:04x}"
        else:
            text = f"\\u{code:04x}"
        self[code] = text
        return text


_JSON_ESCAPES = _JsonEscapes(
    {ord("\\"): "\\\\", ord('"'): '\\"', 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t"}
)
_JSON_ESCAPES.update({c: c for c in range(0x20, 0x7F) if chr(c) not in '\\"'})


def _json_string(text: str) -> str:
    return '"' + text.translate(_JSON_ESCAPES) + '"'


def dumps(value: object, indent: str = "") -> str:
    """json.dumps(value, indent=2), byte for byte, for the documents kvmhook writes (str,
    int, bool, None, lists and dicts with str keys), without importing json and re at start."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, str):
        return _json_string(value)
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_json_string(k)}: {dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + dumps(v, inner) for v in value) + "\n" + indent + "]"
    raise TypeError(f"not written as JSON here: {type(value).__name__}")


# Lines for the portage snippet: "<function> <text>", where function is eerror, ewarn or elog.


def _grouped(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.file, []).append(f)
    return groups


def portage_findings(
    findings: Sequence[Finding], commands: tuple[str, str], stop: bool, mode: str
) -> list[str]:
    """One block per domain config; when the merge stops, the commands that fix it."""
    if not findings:
        return []
    level = "eerror" if stop else "ewarn"
    groups = _grouped(findings)
    lines = [
        f"{level} kvmhook: {len(groups)} libvirt domain config(s) need attention"
        " before this qemu merge:"
    ]
    for file, group in groups.items():
        domain = next((f.domain for f in group if f.domain), None)
        lines.append(f"{level} {file}" + (f" (domain {domain})" if domain else "") + ":")
        for f in group:
            where = f"line {f.line}" if f.line is not None else "file"
            change = f": {f.current} -> {f.proposed or '(no automatic fix)'}" if f.current else ""
            lines.append(f"{level}   {f.severity} [{f.kind}] {where}{change}")
            lines.append(f"{level}     {f.message}")
    if stop:
        fix_command, undo_command = commands
        if any(f.fixable for f in findings):
            lines += [
                f"{level} To fix what kvmhook can (with backups), run:",
                f"{level}   {fix_command}",
                f"{level} and to put the files back afterwards:",
                f"{level}   {undo_command}",
            ]
            if mode == "explain":
                lines.append(
                    f"{level} Or set KVMHOOK_MODE=fix (make.conf or /etc/portage/env) to fix them"
                    " during the merge."
                )
        if any(not f.fixable and f.severity == "error" for f in findings):
            lines.append(f"{level} Entries without an automatic fix say above what they need.")
    return lines


def portage_changes(changes: Sequence[Finding], run: str | None, undo_command: str) -> list[str]:
    lines = [f"elog kvmhook: fixed {_where(f)}: {f.current} -> {f.proposed}" for f in changes]
    if run:
        lines.append(f"elog kvmhook: backups in {run}; to put the files back: {undo_command}")
    return lines


def portage_failure(reason: str) -> list[str]:
    return [
        f"eerror kvmhook could not fix the libvirt domain configs: {reason}",
        "eerror Every original is as it was.",
    ]


def sync_texts(s, uri: str | None) -> list[str]:
    """What became of one daemon's copy of a file (s is a libvirt.Synced), unstyled."""
    how = {
        "defined": "defined through libvirt, verified",
        "reloaded": "re-read by the daemon, verified",
    }.get(s.how)
    if how is None:
        return [f"libvirt ({uri}) still holds the old definition of {s.domain}: {s.note}"]
    texts = [f"libvirt ({uri}) now holds the file's definition of {s.domain} ({how})"]
    if s.note:
        texts.append(f"  {s.note}")
    if s.active:
        texts.append(
            f"  {s.domain} is running: the new emulator applies from its next cold"
            " start (shut it down, then start it)"
        )
    return texts


def sync_lines(s, uri: str | None, colour: bool = False) -> list[str]:
    star = _star("info" if s.verified else "error", colour)
    return [f"{star}{clean(text)}" for text in sync_texts(s, uri)]


# Whole results (api.Result) as the command line and the hook print them.


def result_doc(result: Result) -> dict:
    """The --json document of a result as a dict: the same keys, in the same order, as ever."""
    extra: dict[str, object] = {}
    if result.command == "fix" and result.dry_run:
        extra["diff"] = result.diff
    elif result.command == "fix":
        extra["changes"] = [f.as_json() for f in result.changes]
    extra["daemon"] = result.daemon.as_json()
    if result.command in ("fix", "undo") and not result.dry_run:
        extra["synced"] = [s.as_json() for s in result.synced]
    if result.merge is not None:
        extra["merge"] = result.merge.as_json()
    if result.scanned is not None:
        extra["scanned"] = [{"folder": f, "configs": n} for f, n in result.scanned]
    return {
        "schema": SCHEMA,
        "root": result.root,
        "findings": [f.as_json() for f in result.findings],
        "fixed": list(result.fixed),
        "backup": result.backup,
        **extra,
    }


def result_json(result: Result) -> str:
    return dumps(result_doc(result)) + "\n"


def result_text(result: Result, colour: bool = False) -> str:
    """What check, fix and undo print without --json (a dry run's diff comes first)."""
    if result.command == "undo":
        if result.backup is None:
            head = [info("Nothing to undo: no fix run has backups here.", colour)]
        else:
            head = [info(f"Restored {path}", colour) for path in result.fixed]
            head.append(info(f"from {result.backup}", colour))
        head += _daemon_lines(result, colour)
        return render_text(result.findings, "", colour, head, "Done.")
    head = [info(result.merge.line(result.root), colour), *_scanned_lines(result, colour)]
    text = ""
    if result.command == "fix" and result.dry_run:
        text = clean_diff(result.diff or "")
    elif result.command == "fix":
        head += [change_line(f, colour) for f in result.changes]
        if result.backup:
            head.append(
                info(
                    f"Backups in {result.backup}; to put the files back: {result.undo_command}",
                    colour,
                )
            )
    head += _daemon_lines(result, colour)
    return text + render_text(result.findings, result.fix_command, colour, head)


def _daemon_lines(result: Result, colour: bool) -> list[str]:
    lines = [info(result.daemon.note, colour)]
    return lines + [
        line for s in result.synced for line in sync_lines(s, result.daemon.uri, colour)
    ]


def _scanned_lines(result: Result, colour: bool) -> list[str]:
    """How many configs were read where: nothing read is never an all-clear."""
    if not result.scanned:
        return [info("Read no domain configs: no config folder was found.", colour)]
    total = sum(n for _, n in result.scanned)
    return [info(f"Read {total} domain config(s): {scanned_text(result.scanned)}", colour)]


def portage_lines(result: Result) -> list[str]:
    """The hook's 'eerror|ewarn|elog|einfo TEXT' lines for a hook result."""
    scanned = scanned_text(result.scanned or ()) or "none"
    lines = [f"einfo kvmhook: read the libvirt domain configs: {scanned}"]
    if result.mode == "fix":
        lines += portage_changes(result.changes, result.backup, result.undo_command)
        uri = result.daemon.uri
        lines += [f"elog {text.strip()}" for s in result.synced for text in sync_texts(s, uri)]
        if result.backup and not result.daemon.reached:
            lines.append(f"elog kvmhook: {result.daemon.note}")
    commands = (result.fix_command, result.undo_command)
    return lines + portage_findings(result.findings, commands, result.stop, result.mode)
