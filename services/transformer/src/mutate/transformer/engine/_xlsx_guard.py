"""Checks on a workbook part before calamine or openpyxl parse it.

Two things those parsers cannot be trusted with: a DTD anywhere in the prolog
(entity expansion, external entities), and a sheet whose few cells lie far
apart. calamine builds the whole grid between the first and the last cell, so
cells at A1 and XFD1048576 ask it for 17 billion cells, and it aborts the
process. The grid is bounded here from the cell references, streaming.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from typing import IO

from ._errors import EngineError
from ._values import column_letter

__all__ = ["GRID_CELLS_PER_CELL", "check_grid", "check_prolog"]

_CHUNK = 4 * 1024 * 1024
#: An empty grid cell costs about a quarter of a filled one (a shared empty
#: value instead of its own object), so the grid may be this many times
#: max_cells.
GRID_CELLS_PER_CELL = 4
_MAX_ROWS = 1_048_576
# Cell references mapped to a shape: letters to "A", digits to "0", quotes to
# "."; whitespace is dropped (`r = "A1"` is a reference too).
_SHAPE = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'\"",
    b"A" * 26 + b"0" * 10 + b"..",
)
_BLANKS = b" \t\r\n"
_SHORT_ROWS = 99_999
# Column bounds by the letters of a reference; four letters or more are past
# XFD, and only the exact pass says how far.
_COLUMN_BOUNDS = {1: 26, 2: 702, 3: 16_384, 4: 1 << 62}
# A cell with content: its tag is not self-closing and a child element follows.
# Empty styled cells (gnumeric writes a whole last row of them) are not in the
# grid calamine builds.
_FILLED_REF = re.compile(rb"\br\s*=\s*[\"']([A-Z]+)([0-9]+)[\"'][^>]*(?<!/)>\s*<(?!/)")
_OVERLAP = 16


def check_prolog(archive: zipfile.ZipFile, path: str, what: str) -> None:
    """Refuse a part whose prolog (before the root element) holds a DTD."""
    try:
        with archive.open(path) as stream:
            _check_prolog(stream, what)
    except KeyError:
        return
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise EngineError(
            "INVALID_FILE", f"{what} is corrupt or truncated ({exc})"
        ) from exc


def _check_prolog(stream: IO[bytes], what: str) -> None:
    buffer = b""

    def fill(size: int) -> bool:
        nonlocal buffer
        while len(buffer) < size:
            chunk = stream.read(64 * 1024)
            if not chunk:
                return False
            buffer += chunk
        return True

    while True:
        fill(16)
        buffer = buffer.lstrip(b"\xef\xbb\xbf \t\r\n")
        if not fill(9):
            return
        if buffer.startswith((b"<!DOCTYPE", b"<!ENTITY")):
            raise EngineError(
                "INVALID_FILE",
                f"{what} declares XML entities or a DTD, which are refused",
            )
        closer = b"?>" if buffer.startswith(b"<?") else None
        closer = b"-->" if buffer.startswith(b"<!--") else closer
        if closer is None:
            return  # the root element comes first
        # Skip the declaration or comment, however long.
        buffer = buffer[2:]
        while (end := buffer.find(closer)) < 0:
            buffer = buffer[1 - len(closer) :]
            if not fill(len(buffer) + 1):
                return
        buffer = buffer[end + len(closer) :]


def check_grid(archive: zipfile.ZipFile, path: str, sheet: str, max_cells: int) -> None:
    """Refuse a sheet whose cells span a grid too large to hold in memory."""
    budget = GRID_CELLS_PER_CELL * max_cells
    letters, tall = _reference_shapes(archive, path, sheet)
    rows = {0: _SHORT_ROWS, 1: _MAX_ROWS}.get(tall, 1 << 62)
    if rows * _COLUMN_BOUNDS[letters] <= budget:
        return
    # The quick bound is too coarse: read the references exactly.
    rows, columns = _last_row_and_column(archive, path, sheet)
    if rows * columns > budget:
        corner = f"{column_letter(columns - 1)}{rows}"
        raise EngineError(
            "LIMIT_EXCEEDED",
            f"sheet {sheet!r} spans {rows} rows x {columns} columns (A1:{corner}), "
            f"more than {budget} grid cells ({GRID_CELLS_PER_CELL} x limit "
            "max_cells)",
        )


def _chunks(archive: zipfile.ZipFile, path: str, sheet: str) -> IO[bytes]:
    try:
        return archive.open(path)
    except KeyError as exc:
        raise EngineError(
            "INVALID_FILE", f"sheet {sheet!r}: part {path} is missing"
        ) from exc


def _reference_shapes(
    archive: zipfile.ZipFile, path: str, sheet: str
) -> tuple[int, int]:
    """The most letters in any cell reference (1 to 4, four meaning past XFD),
    and 0, 1 or 2 for row numbers of at most four digits, at most six, or
    more (near or past the last row). A few substring searches per chunk: this
    runs before every sheet is read, so it costs little more than the
    decompression."""
    letters, tall = 1, 0
    tail = b""
    try:
        with _chunks(archive, path, sheet) as stream:
            while chunk := stream.read(_CHUNK):
                # Translated pieces join like the text they come from, so a
                # reference across two chunks is still found in the shapes.
                shape = tail + chunk.translate(_SHAPE, _BLANKS)
                tail = shape[-_OVERLAP:]
                while letters < 4 and b"r=." + b"A" * (letters + 1) in shape:
                    letters += 1
                # Text such as "C861168" matches too: only a coarser bound.
                while tall < 2 and b"A" + b"0" * (5 + 2 * tall) in shape:
                    tall += 1
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise EngineError(
            "INVALID_FILE", f"sheet {sheet!r} is corrupt or truncated ({exc})"
        ) from exc
    return letters, tall


def _last_row_and_column(
    archive: zipfile.ZipFile, path: str, sheet: str
) -> tuple[int, int]:
    rows = columns = 0
    tail = b""
    try:
        with _chunks(archive, path, sheet) as stream:
            while chunk := stream.read(_CHUNK):
                part = tail + chunk
                # No match holds "</" or "/>": cutting at the last one never
                # splits a cell between two parts.
                cut = max(part.rfind(b"</"), part.rfind(b"/>"))
                if cut < 0 and len(part) < 4 * _CHUNK:
                    tail = part
                    continue
                part, tail = (part[:cut], part[cut:]) if cut >= 0 else (part, b"")
                rows, columns = _extent(part, rows, columns)
            rows, columns = _extent(tail, rows, columns)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise EngineError(
            "INVALID_FILE", f"sheet {sheet!r} is corrupt or truncated ({exc})"
        ) from exc
    return rows, columns


def _extent(part: bytes, rows: int, columns: int) -> tuple[int, int]:
    for found_letters, found_digits in _FILLED_REF.findall(part):
        rows = max(rows, int(found_digits[:12]))
        column = 0
        for letter in found_letters[:12]:
            column = column * 26 + letter - 64
        columns = max(columns, column)
    return rows, columns
