"""The smallest byte edit that applies a set of changes to a domain config.

The parser that read the file (domains.parse) recorded the byte span of every
emulator path and of the <domain type> value; only those bytes are replaced.
The result is parsed again, and its whole event stream must equal the original
document's with exactly those values changed.
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


def _events(data: bytes) -> list[tuple]:
    """Everything a parser reports of a document, in order: elements with their attributes
    as written, text (joined), comments, processing instructions and CDATA sections, each
    element with its path from the root."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    parser.ordered_attributes = True
    events: list[tuple] = []
    text: list[str] = []
    path: list[str] = []

    def flush() -> None:
        if text:
            events.append(("text", "".join(text)))
            text.clear()

    def start(name: str, attrs: list) -> None:
        flush()
        path.append(name)
        events.append(("start", tuple(path), list(attrs)))

    def end(name: str) -> None:
        flush()
        path.pop()
        events.append(("end", name))

    def mark(kind: str):
        def handler(*args: object) -> None:
            flush()
            events.append((kind, *args))

        return handler

    def refuse(*_: object) -> None:
        raise EditError("declares entities or a DOCTYPE")

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text.append
    parser.CommentHandler = mark("comment")
    parser.ProcessingInstructionHandler = mark("pi")
    parser.StartCdataSectionHandler = mark("cdata")
    parser.EndCdataSectionHandler = mark("/cdata")
    parser.EntityDeclHandler = parser.StartDoctypeDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        raise EditError(f"not well-formed XML: {expat.ErrorString(err.code)}") from None
    except (ValueError, LookupError) as err:
        raise EditError(str(err)) from None
    flush()
    return events


def _set(attrs: list, name: str, value: str) -> None:
    i = attrs[0::2].index(name)  # ordered_attributes: [name, value, name, value, ...]
    attrs[2 * i + 1] = value


def verify(old: bytes, new: bytes, changes: Sequence[Change]) -> None:
    """new must parse to old with exactly the changes applied, and nothing else: the two
    documents' whole event streams are compared."""
    expected = _events(old)
    try:
        actual = _events(new)
    except EditError as err:
        raise EditError(f"the edited file does not parse: {err}") from None
    emulators = [
        i
        for i, e in enumerate(expected)
        if e[0] == "start" and e[1] == ("domain", "devices", "emulator")
    ]
    try:
        for change in changes:
            if change.what == "emulator":
                at = emulators[change.index] + 1
                kind, text = expected[at]
                if kind != "text":
                    raise EditError("the emulator holds no text")
                expected[at] = (kind, text.replace(text.strip(_XML_SPACE), change.new, 1))
            elif change.what == "machine":
                (event,) = [
                    e for e in expected if e[0] == "start" and e[1] == ("domain", "os", "type")
                ]
                _set(event[2], "machine", change.new)
            else:
                root = next(e for e in expected if e[0] == "start")
                _set(root[2], "type", change.new)
    except (IndexError, ValueError, StopIteration):
        raise EditError("the change has no place in the file") from None
    if actual != expected:
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
