"""Hostile and benign files, built in the test: workbooks, zip bombs, fakes.

Workbooks are written by hand (zip + SpreadsheetML) so a test controls every
byte: the declared dimension, how many cells there really are, and for the
zip bombs the compressed stream and the sizes the zip's headers claim.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-'
    'package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    f'<Override PartName="/xl/workbook.xml" ContentType="{_CT}.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    f'ContentType="{_CT}.worksheet+xml"/></Types>'
).encode()
ROOT_RELS = (
    f'<Relationships xmlns="{_PKG_REL}"><Relationship Id="rId1" '
    f'Type="{_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
).encode()
WORKBOOK = (
    f'<workbook xmlns="{_MAIN}" xmlns:r="{_REL}"><sheets>'
    '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
).encode()
WORKBOOK_RELS = (
    f'<Relationships xmlns="{_PKG_REL}"><Relationship Id="rId1" '
    f'Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
).encode()
SHEET = "xl/worksheets/sheet1.xml"

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
    b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01"
    b"\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _column(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def _cell(row: int, col: int, value: object) -> str:
    ref = f"{_column(col)}{row}"
    if isinstance(value, int | float):
        return f'<c r="{ref}"><v>{value}</v></c>'
    # A raw CR in XML text reads back as LF: spell it as a reference.
    text = escape(str(value), {"\r": "&#13;"})
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def sheet_xml(rows: Sequence[Sequence[object]], *, dimension: str = "") -> bytes:
    parts = [f'<worksheet xmlns="{_MAIN}">']
    if dimension:
        parts.append(f'<dimension ref="{dimension}"/>')
    parts.append("<sheetData>")
    for r, row in enumerate(rows, start=1):
        cells = "".join(_cell(r, c, v) for c, v in enumerate(row))
        parts.append(f'<row r="{r}">{cells}</row>')
    parts.append("</sheetData></worksheet>")
    return "".join(parts).encode()


def _parts(sheet: bytes) -> list[tuple[str, bytes]]:
    return [
        ("[Content_Types].xml", CONTENT_TYPES),
        ("_rels/.rels", ROOT_RELS),
        ("xl/workbook.xml", WORKBOOK),
        ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS),
        (SHEET, sheet),
    ]


def workbook(rows: Sequence[Sequence[object]], *, dimension: str = "") -> bytes:
    """A one-sheet .xlsx holding `rows` (the first is the header)."""
    entries = [
        _Entry.deflated(name, data)
        for name, data in _parts(sheet_xml(rows, dimension=dimension))
    ]
    return _zip(entries)


def dense_workbook(rows: int, columns: int, *, seed: int = 7) -> bytes:
    """A workbook that really holds rows x columns cells (numbers that do
    not compress well, so no zip ratio limit is what refuses it)."""
    rng = random.Random(seed)
    header = [f"c{i}" for i in range(columns)]
    body = [[rng.randrange(10**6) for _ in range(columns)] for _ in range(rows - 1)]
    return workbook([header, *body])


# --- zip bombs -------------------------------------------------------------------


class _Entry:
    def __init__(
        self,
        name: str,
        compressed: Iterable[bytes] | bytes,
        *,
        crc: int,
        size: int,
        compressed_size: int,
        method: int = 8,
    ) -> None:
        self.name = name.encode()
        self.compressed = compressed
        self.crc = crc
        self.size = size
        self.compressed_size = compressed_size
        self.method = method

    @classmethod
    def deflated(cls, name: str, data: bytes) -> _Entry:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed = packer.compress(data) + packer.flush()
        return cls(
            name,
            packed,
            crc=zlib.crc32(data),
            size=len(data),
            compressed_size=len(packed),
        )


def _zip(entries: Sequence[_Entry]) -> bytes:
    out = bytearray()
    central = bytearray()
    for entry in entries:
        offset = len(out)
        header = struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            20,
            0,
            entry.method,
            0,
            0x21,
            entry.crc,
            entry.compressed_size,
            entry.size,
            len(entry.name),
            0,
        )
        out += header + entry.name
        chunks = (
            [entry.compressed]
            if isinstance(entry.compressed, bytes)
            else entry.compressed
        )
        for chunk in chunks:
            out += chunk
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            entry.method,
            0,
            0x21,
            entry.crc,
            entry.compressed_size,
            entry.size,
            len(entry.name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += entry.name
    directory_offset = len(out)
    out += central
    out += struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        len(entries),
        len(entries),
        len(central),
        directory_offset,
        0,
    )
    return bytes(out)


def zip_bomb(expanded: int = 3 * 1024**3, *, lie: bool = False) -> tuple[bytes, int]:
    """A workbook whose sheet XML inflates to `expanded` bytes of one text
    cell; with `lie`, its headers claim the sheet is a few hundred bytes.

    The deflate stream is one compressed block of 16 MiB of spaces repeated
    (a full flush makes each copy independent), so building it takes about a
    second and the file is ~1/1000 of `expanded`. Returns (file, real size).
    """
    head = (
        f'<worksheet xmlns="{_MAIN}"><sheetData><row r="1">'
        '<c r="A1" t="inlineStr"><is><t>'
    ).encode()
    tail = b"</t></is></c></row></sheetData></worksheet>"
    block = b" " * (16 * 1024 * 1024)
    copies = (expanded - len(head) - len(tail)) // len(block)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    middle = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    last = packer.compress(tail) + packer.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(copies):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + copies * len(block) + len(tail)
    compressed = [first, *([middle] * copies), last]
    compressed_size = sum(len(c) for c in compressed)
    sheet = _Entry(
        SHEET,
        compressed,
        crc=crc,
        size=min(size, len(head) + len(tail) + 100) if lie else size,
        compressed_size=compressed_size,
    )
    entries = [_Entry.deflated(n, d) for n, d in _parts(b"")[:-1]]
    return _zip([*entries, sheet]), size
