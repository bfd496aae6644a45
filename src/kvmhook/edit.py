"""The smallest byte edit that applies a set of changes to a domain config.

The parser that read the file (domains.parse) recorded the byte span of every
emulator path and of the <domain type> value; only those bytes are replaced.
The result is parsed again with lxml and must equal the original document with
exactly those values changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .domains import Domain
from .findings import Change

_XML_SPACE = " \t\r\n"
_PARSER = None


class EditError(Exception):
    """The change cannot be made as a safe, minimal byte edit."""


def parse_tree(data: bytes):
    """lxml's tree of untrusted bytes: no entities resolved, no DTD loaded, no network."""
    global _PARSER
    from lxml import etree

    if _PARSER is None:
        _PARSER = etree.XMLParser(
            resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False
        )
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as err:
        raise EditError(err.msg) from None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise EditError("declares entities")
    return root


def _escape(value: str) -> bytes:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode("ascii")


def splice(data: bytes, changes: Sequence[Change], domain: Domain) -> bytes:
    """The bytes with each change written over its recorded span, and nothing else."""
    if domain.editable:
        raise EditError(domain.editable)
    edits = []
    for change in changes:
        if change.what == "emulator":
            span = domain.emulators[change.index].span
            expected = change.old.strip(_XML_SPACE)
        elif change.what == "machine":
            span, expected = domain.machine_span, change.old
        else:
            span, expected = domain.type_span, change.old
        if span is None or data[span[0] : span[1]] != _escape(expected):
            raise EditError(f"the {change.what} is not written as plain text; edit it by hand")
        edits.append((span[0], span[1], _escape(change.new)))
    edits.sort()
    if any(b[0] < a[1] for a, b in zip(edits, edits[1:], strict=False)):
        raise EditError("changes overlap")
    pieces, pos = [], 0
    for begin, end, new in edits:
        pieces += [data[pos:begin], new]
        pos = end
    pieces.append(data[pos:])
    return b"".join(pieces)


def apply(data: bytes, changes: Sequence[Change], domain: Domain) -> bytes:
    """The file's bytes with the changes made, verified; raises EditError when unsafe."""
    result = splice(data, changes, domain)
    verify(data, result, changes)
    return result


def _canonical(root) -> bytes:
    from lxml import etree

    return etree.tostring(root.getroottree(), method="c14n", with_comments=True)


def verify(old: bytes, new: bytes, changes: Sequence[Change]) -> None:
    """new must parse to old with exactly the changes applied, and nothing else."""
    try:
        expected = parse_tree(old)
    except EditError as err:
        why = f"the edit cannot be verified, lxml does not read the file ({err})"
        raise EditError(why) from None
    for change in changes:
        if change.what == "emulator":
            element = expected.findall("devices/emulator")[change.index]
            text = element.text or ""
            element.text = text.replace(text.strip(_XML_SPACE), change.new, 1)
        elif change.what == "machine":
            expected.find("os/type").set("machine", change.new)
        else:
            expected.set("type", change.new)
    try:
        actual = parse_tree(new)
    except EditError as err:
        raise EditError(f"the edited file does not parse: {err}") from None
    if _canonical(actual) != _canonical(expected):
        raise EditError("the edited file differs from the intended change")


def unified_diff(path: str, old: bytes, new: bytes) -> str:
    import difflib

    lines = difflib.unified_diff(
        old.decode("utf-8", "replace").splitlines(keepends=True),
        new.decode("utf-8", "replace").splitlines(keepends=True),
        fromfile=path,
        tofile=path,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
