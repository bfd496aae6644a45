"""The smallest byte edit that applies a set of changes to a domain config.

Only the emulator text and the <domain type> value are replaced, found with
regular expressions on a copy of the file in which comments, CDATA and
processing instructions are blanked out. The result is parsed again and must
equal the original document with exactly those values changed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from .domains import parse_tree
from .findings import Change

_HIDDEN = re.compile(rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>", re.S)
_EMULATOR_TAG = re.compile(rb"<emulator(?=[\s/>])")
_EMULATOR = re.compile(rb"<emulator\s*>([^<]*)</emulator\s*>")
_DOMAIN_TAG = re.compile(rb"<domain(?=[\s/>])")
_ATTRIBUTE = re.compile(rb"\s+([^\s=/>]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_XML_SPACE = b" \t\r\n"


class EditError(Exception):
    """The change cannot be made as a safe, minimal byte edit."""


def _mask(data: bytes) -> bytes:
    return _HIDDEN.sub(lambda m: b" " * len(m.group(0)), data)


def _check_encoding(data: bytes, root) -> None:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise EditError("the file is UTF-16 or UTF-32; edit it by hand")
    docinfo = root.getroottree().docinfo
    if (docinfo.encoding or "").lower().replace("-", "").startswith(("utf16", "utf32", "ucs")):
        raise EditError(f"the file is {docinfo.encoding}; edit it by hand")
    if docinfo.internalDTD is not None or docinfo.system_url or docinfo.public_id:
        raise EditError("the file has a DOCTYPE, which libvirt never writes; edit it by hand")


def _emulator_span(data: bytes, masked: bytes, root, index: int) -> tuple[int, int]:
    elements = [
        el
        for el in root.iter()
        if isinstance(el.tag, str) and el.prefix is None and el.tag.rpartition("}")[2] == "emulator"
    ]
    tags = list(_EMULATOR_TAG.finditer(masked))
    if len(tags) != len(elements):
        raise EditError("cannot map <emulator> elements to the file's bytes")
    wanted = root.findall("devices/emulator")[index]
    position = next(i for i, el in enumerate(elements) if el is wanted)
    start = tags[position].start()
    match = _EMULATOR.match(masked, start)
    if match is None or data[match.start() : match.end()] != masked[match.start() : match.end()]:
        raise EditError("the <emulator> element holds markup or comments; edit it by hand")
    begin, end = match.span(1)
    while begin < end and data[begin] in _XML_SPACE:
        begin += 1
    while end > begin and data[end - 1] in _XML_SPACE:
        end -= 1
    return begin, end


def _type_span(masked: bytes) -> tuple[int, int]:
    tag = _DOMAIN_TAG.search(masked)
    if tag is None:
        raise EditError("cannot find the <domain> start tag")
    pos = tag.end()
    while match := _ATTRIBUTE.match(masked, pos):
        if match.group(1) == b"type":
            group = 2 if match.group(2) is not None else 3
            return match.span(group)
        pos = match.end()
    raise EditError("cannot find the type attribute of <domain>")


def _escape(value: str) -> bytes:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode("ascii")


def apply(data: bytes, changes: Sequence[Change]) -> bytes:
    """The file's bytes with the changes made; raises EditError when unsafe."""
    try:
        root = parse_tree(data)
    except ValueError as err:
        raise EditError(str(err)) from None
    _check_encoding(data, root)
    masked = _mask(data)
    edits: list[tuple[int, int, bytes]] = []
    for change in changes:
        if change.what == "emulator":
            begin, end = _emulator_span(data, masked, root, change.index)
            expected = change.old.strip(_XML_SPACE.decode())
        else:
            begin, end = _type_span(masked)
            expected = change.old
        if data[begin:end] != _escape(expected):
            raise EditError(f"{change.what} is not written as plain text in the file")
        edits.append((begin, end, _escape(change.new)))
    edits.sort()
    for (_, end, _), (begin, _, _) in zip(edits, edits[1:], strict=False):
        if begin < end:
            raise EditError("changes overlap")
    pieces, pos = [], 0
    for begin, end, new in edits:
        pieces += [data[pos:begin], new]
        pos = end
    pieces.append(data[pos:])
    result = b"".join(pieces)
    if len(edits) != len(changes):
        raise EditError(f"{len(edits)} substitutions for {len(changes)} changes")
    verify(data, result, changes)
    return result


def _canonical(root) -> bytes:
    from lxml import etree

    return etree.tostring(root.getroottree(), method="c14n", with_comments=True)


def verify(old: bytes, new: bytes, changes: Sequence[Change]) -> None:
    """new must parse to old with exactly the changes applied, and nothing else."""
    expected = parse_tree(old)
    for change in changes:
        if change.what == "emulator":
            element = expected.findall("devices/emulator")[change.index]
            text = element.text or ""
            element.text = text.replace(text.strip(_XML_SPACE.decode()), change.new, 1)
        else:
            expected.set("type", change.new)
    try:
        actual = parse_tree(new)
    except ValueError as err:
        raise EditError(f"the edited file does not parse: {err}") from None
    if _canonical(actual) != _canonical(expected):
        raise EditError("the edited file differs from the intended change")


def unified_diff(path: str, old: bytes, new: bytes) -> str:
    lines = difflib.unified_diff(
        old.decode("utf-8", "replace").splitlines(keepends=True),
        new.decode("utf-8", "replace").splitlines(keepends=True),
        fromfile=path,
        tofile=path,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
