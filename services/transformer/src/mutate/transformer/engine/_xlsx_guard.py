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
from ._values import column_index, column_letter

__all__ = ["GRID_CELLS_PER_CELL", "check_grid", "check_prolog"]

_CHUNK = 4 * 1024 * 1024
#: An empty grid cell costs about a quarter of a filled one (a shared empty
#: value instead of its own object), so the grid may be this many times
#: max_cells.
GRID_CELLS_PER_CELL = 4
_MAX_ROWS = 1_048_576
# Cell references mapped to a shape: letters to "A", digits to "0", quotes to
# ".", whitespace to a space.
_SHAPE = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'\"\t\r\n",
    b"A" * 26 + b"0" * 10 + b"..   ",
)
_COLUMN_BOUNDS = {1: 26, 2: 702, 3: 16_384}
# A cell with content: its tag is not self-closing and a child element follows.
# Empty styled cells (gnumeric writes a whole last row of them) are not in the
# grid calamine builds.
_FILLED_REF = re.compile(
    rb"\br\s*=\s*[\"']([A-Z]{1,3})([0-9]{1,7})[\"'][^>]*(?<!/)>\s*<(?!/)"
)
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


def check_grid(
    archive: zipfile.ZipFile, path: str, sheet: str, max_cells: int
) -> None:
    """Refuse a sheet whose cells span a grid too large to hold in memory."""
    budget = GRID_CELLS_PER_CELL * max_cells
    letters, digits = _reference_shapes(archive, path, sheet)
    rows = min(10**digits - 1, _MAX_ROWS)
    if rows * _COLUMN_BOUNDS.get(letters, 0) <= budget:
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
    """The most letters and the most digits found in any cell reference."""
    letters = digits = 0
    tail = b""
    try:
        with _chunks(archive, path, sheet) as stream:
            while chunk := stream.read(_CHUNK):
                shape = (tail + chunk).translate(_SHAPE)
                tail = chunk[-_OVERLAP:]
                if b" =" in shape or b"= " in shape:
                    # `r = "A1"` is a reference too; only the exact pass sees it.
                    return 3, 7
                for count in range(3, letters, -1):
                    if b"r=." + b"A" * count + b"0" in shape:
                        letters = count
                        break
                for count in range(7, digits, -1):
                    if b"A" + b"0" * count + b"." in shape:
                        digits = count
                        break
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise EngineError(
            "INVALID_FILE", f"sheet {sheet!r} is corrupt or truncated ({exc})"
        ) from exc
    return letters, digits


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
        rows = max(rows, int(found_digits))
        column = column_index(found_letters.decode())
        if column is not None:
            columns = max(columns, column + 1)
    return rows, columns
