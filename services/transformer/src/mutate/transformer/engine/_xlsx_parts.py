"""The small XLSX parts read with defusedxml: container checks, workbook, styles.

Only the workbook index and the style table are parsed as XML trees; sheet data
goes to python-calamine and to the targeted scan in `_xlsx_scan`.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import cast
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as safe_et  # type: ignore[import-untyped]
from defusedxml import DefusedXmlException

from ._errors import EngineError
from ._limits import Limits
from ._values import BUILTIN_FORMATS, FormatKind, classify_format

__all__ = ["SheetInfo", "WorkbookIndex", "open_container", "read_index"]

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
# Members smaller than this are not judged by their compression ratio: tiny
# XML parts legitimately compress far better than sheet data.
_RATIO_FLOOR_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SheetInfo:
    name: str
    path: str
    kind: str  # "worksheet", "chartsheet", "macrosheet", "dialogsheet"
    state: str  # "visible", "hidden", "veryHidden"

    @property
    def visible(self) -> bool:
        return self.state == "visible"


@dataclass(frozen=True)
class WorkbookIndex:
    sheets: list[SheetInfo]
    date1904: bool
    #: cellXfs index → (number format id, format code or None for builtins).
    styles: list[tuple[int, str | None]] = field(default_factory=list)
    #: Shared string table parts (parsed by calamine/openpyxl, checked first).
    shared_strings: list[str] = field(default_factory=list)

    @property
    def worksheets(self) -> list[SheetInfo]:
        return [sheet for sheet in self.sheets if sheet.kind == "worksheet"]

    def style_kind(self, style_id: int) -> FormatKind:
        if style_id >= len(self.styles):
            return FormatKind.NUMBER
        num_fmt_id, code = self.styles[style_id]
        return classify_format(num_fmt_id, code)

    def style_code(self, style_id: int) -> str:
        if style_id >= len(self.styles):
            return "General"
        num_fmt_id, code = self.styles[style_id]
        if code is None:
            return BUILTIN_FORMATS.get(num_fmt_id, "General")
        return code


def open_container(data: bytes, file_name: str, limits: Limits) -> zipfile.ZipFile:
    """Open the zip after checking what the file really is and its sizes."""
    if data.startswith(_OLE_MAGIC):
        if _ENCRYPTED_STREAM in data:
            raise EngineError(
                "PASSWORD_PROTECTED",
                f"{file_name} is password-protected; remove the password in the "
                "spreadsheet program and upload it again",
            )
        raise EngineError(
            "WRONG_FILE_TYPE",
            f"{file_name} is a legacy binary Excel file (.xls), not an XLSX "
            "workbook; save it as .xlsx",
        )
    if not data.startswith(_ZIP_MAGIC):
        raise EngineError(
            "WRONG_FILE_TYPE",
            f"{file_name} is not an XLSX workbook (it is not a zip container)",
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise EngineError(
            "INVALID_FILE", f"{file_name} is corrupt or truncated ({exc})"
        ) from exc
    _check_sizes(members, file_name, limits)
    return archive


def _check_sizes(
    members: list[zipfile.ZipInfo], file_name: str, limits: Limits
) -> None:
    total = 0
    for member in members:
        total += member.file_size
        if total > limits.max_uncompressed_bytes:
            raise EngineError(
                "LIMIT_EXCEEDED",
                f"{file_name} expands to more than {limits.max_uncompressed_bytes} "
                "bytes (limit max_uncompressed_bytes)",
            )
        if member.file_size >= _RATIO_FLOOR_BYTES:
            ratio = member.file_size / max(member.compress_size, 1)
            if ratio > limits.max_compression_ratio:
                raise EngineError(
                    "LIMIT_EXCEEDED",
                    f"{file_name}: part {member.filename} compresses {ratio:.0f}:1, "
                    f"over the limit max_compression_ratio="
                    f"{limits.max_compression_ratio:g} (zip bomb?)",
                )


def _parse(archive: zipfile.ZipFile, path: str, file_name: str) -> Element | None:
    try:
        raw = archive.read(path)
    except KeyError:
        return None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
        raise EngineError(
            "INVALID_FILE", f"{file_name}: part {path} is corrupt ({exc})"
        ) from exc
    try:
        return cast(Element, safe_et.fromstring(raw))
    except DefusedXmlException as exc:
        raise EngineError(
            "INVALID_FILE",
            f"{file_name}: part {path} declares XML entities or a DTD, "
            "which are refused",
        ) from exc
    except SyntaxError as exc:  # ParseError subclasses SyntaxError
        raise EngineError(
            "INVALID_FILE", f"{file_name}: part {path} is not valid XML ({exc})"
        ) from exc


# Relationship types of sheet parts, by the last segment of their URI.
_SHEET_KINDS = {
    "xlMacrosheet": "macrosheet",
    "xlIntlMacrosheet": "macrosheet",
    "dialogsheet": "dialogsheet",
}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(element: Element, name: str) -> str | None:
    # Strict OOXML and transitional use different namespaces for r:id.
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def _relationships(
    archive: zipfile.ZipFile, rels_path: str, base: str, file_name: str
) -> dict[str, tuple[str, str]]:
    root = _parse(archive, rels_path, file_name)
    found: dict[str, tuple[str, str]] = {}
    if root is None:
        return found
    for rel in root:
        target = rel.get("Target", "")
        if rel.get("TargetMode") == "External":
            continue
        if target.startswith("/"):
            path = target.lstrip("/")
        else:
            path = posixpath.normpath(posixpath.join(base, target))
        kind = rel.get("Type", "").rsplit("/", 1)[-1]
        found[rel.get("Id", "")] = (path, _SHEET_KINDS.get(kind, kind))
    return found


def read_index(archive: zipfile.ZipFile, file_name: str) -> WorkbookIndex:
    """Sheets in tab order with their kind and visibility, date system, styles."""
    root_rels = _relationships(archive, "_rels/.rels", "", file_name)
    workbook_path = next(
        (path for path, kind in root_rels.values() if kind == "officeDocument"),
        "xl/workbook.xml",
    )
    workbook = _parse(archive, workbook_path, file_name)
    if workbook is None:
        raise EngineError(
            "INVALID_FILE",
            f"{file_name} is a zip file but not a workbook (no {workbook_path})",
        )
    base = posixpath.dirname(workbook_path)
    rels_path = posixpath.join(
        base, "_rels", posixpath.basename(workbook_path) + ".rels"
    )
    rels = _relationships(archive, rels_path, base, file_name)

    date1904 = False
    sheets: list[SheetInfo] = []
    for element in workbook.iter():
        tag = _local(element.tag)
        if tag == "workbookPr" and "date1904" in element.attrib:
            # Extension lists may repeat workbookPr without the attribute.
            date1904 = element.get("date1904", "0").lower() in ("1", "true")
        elif tag == "sheet":
            path, kind = rels.get(_attr(element, "id") or "", ("", "worksheet"))
            sheets.append(
                SheetInfo(
                    name=element.get("name", ""),
                    path=path,
                    kind=kind,
                    state=element.get("state", "visible"),
                )
            )
    styles_path = next((path for path, kind in rels.values() if kind == "styles"), None)
    styles = _styles(archive, styles_path, file_name) if styles_path else []
    shared_strings = [path for path, kind in rels.values() if kind == "sharedStrings"]
    return WorkbookIndex(
        sheets=sheets, date1904=date1904, styles=styles, shared_strings=shared_strings
    )


def _styles(
    archive: zipfile.ZipFile, path: str, file_name: str
) -> list[tuple[int, str | None]]:
    try:
        root = _parse(archive, path, file_name)
    except EngineError as exc:
        if exc.code != "INVALID_FILE" or "entities" in exc.message:
            raise
        # A broken style table still leaves the values readable.
        return []
    if root is None:
        return []
    codes: dict[int, str] = {}
    styles: list[tuple[int, str | None]] = []
    for element in root.iter():
        if _local(element.tag) == "numFmt":
            try:
                codes[int(element.get("numFmtId", ""))] = element.get("formatCode", "")
            except ValueError:
                continue
    for element in root:
        if _local(element.tag) != "cellXfs":
            continue
        for xf in element:
            try:
                num_fmt_id = int(xf.get("numFmtId", "0"))
            except ValueError:
                num_fmt_id = 0
            styles.append((num_fmt_id, codes.get(num_fmt_id)))
    return styles
