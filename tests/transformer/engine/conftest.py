"""Fixtures and helpers for the engine tests: the corpus, configurations, workbooks."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from openpyxl import Workbook

from mutate.transformer.engine import ConversionResult, Limits, convert
from mutate.v1 import configuration_pb2 as cfg

REPO_ROOT = Path(__file__).resolve().parents[3]


def corpus_dir() -> Path:
    """shared/corpus beside the repository, or MUTATE_CORPUS_DIR; never skipped."""
    configured = os.environ.get("MUTATE_CORPUS_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "corpus"
    if not (path / "MANIFEST.tsv").is_file():
        raise RuntimeError(
            f"test corpus not found at {path}; set MUTATE_CORPUS_DIR to shared/corpus"
        )
    return path


@pytest.fixture(scope="session")
def corpus() -> Path:
    return corpus_dir()


def configuration(document: dict[str, Any] | None = None) -> cfg.Configuration:
    """A Configuration from its proto3 JSON form, unknown fields refused."""
    message = cfg.Configuration()
    json_format.ParseDict(document or {}, message, ignore_unknown_fields=False)
    return message


def run(
    data: bytes,
    file_name: str = "book.xlsx",
    document: dict[str, Any] | None = None,
    *,
    limits: Limits | None = None,
) -> tuple[bytes, ConversionResult]:
    """Convert and return the output bytes with the result."""
    output = io.BytesIO()
    result = convert(
        data, file_name, configuration(document), output, limits=limits or Limits()
    )
    return output.getvalue(), result


def text(data: bytes, file_name: str = "book.xlsx", **document: Any) -> str:
    """Convert with keyword parts of the configuration; the output as text."""
    output, _ = run(data, file_name, document or None)
    return output.decode("utf-8")


def workbook_bytes(build: Callable[[Workbook], None]) -> bytes:
    """A workbook made by `build` (which gets a fresh Workbook), as bytes."""
    book = Workbook()
    build(book)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def sheet_bytes(rows: list[list[Any]], **formats: str) -> bytes:
    """One-sheet workbook; `formats` maps a cell ("B2") to its number format."""

    def build(book: Workbook) -> None:
        sheet = book.active
        sheet.title = "Data"
        for row in rows:
            sheet.append(row)
        for cell, number_format in formats.items():
            sheet[cell].number_format = number_format

    return workbook_bytes(build)
