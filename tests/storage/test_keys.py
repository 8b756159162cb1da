"""The object-key scheme: builders keep real file names, nothing escapes."""

from __future__ import annotations

import unicodedata

import pytest

from mutate.common import keys
from mutate.common.errors import InvalidArgument

ODD_NAMES = [
    "report.csv",
    "my report (final) v2.csv",
    "a+b=c.csv",
    "résumé école.xlsx",
    "données 😀🚀.json",
    "👩‍💻 team.csv",
    "100% [draft] #1 & co.csv",
    "名前.csv",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_keys_builders_keep_odd_file_names(name: str) -> None:
    key = keys.output_key("org_1", "job-2", name)

    assert key == f"output/org_1/job-2/{name}"
    parsed = keys.parse_key(key)
    assert parsed == keys.ObjectKey(keys.Area.OUTPUT, "org_1", "job-2", name)
    assert str(parsed) == key


def test_keys_builders_use_their_area() -> None:
    assert keys.upload_key("o", "u", "a.csv") == "uploads/o/u/a.csv"
    assert keys.input_key("o", "j", "a.csv") == "input/o/j/a.csv"
    assert keys.job_prefix(keys.Area.OUTPUT, "o", "j") == "output/o/j/"
    assert keys.parse_key("input/o/j/a.csv").prefix == "input/o/j/"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("C:\\Users\\me\\data.csv", "data.csv"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a\x00b\x1f\x7f.csv", "ab.csv"),
        ("line\nbreak.csv", "linebreak.csv"),
        ("evil\u202egpj.exe", "evilgpj.exe"),
        ("  spaced .csv  ", "spaced .csv"),
        ("trailing.csv...", "trailing.csv"),
        ("e\u0301cole.csv", "école.csv"),
    ],
)
def test_keys_sanitize_neutralises_paths_and_controls(raw: str, clean: str) -> None:
    assert keys.sanitize_file_name(raw) == clean


@pytest.mark.parametrize("raw", ["", "..", ".", "../", "  ", "\x00\x01", "a/.."])
def test_keys_sanitize_refuses_names_with_nothing_left(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        keys.sanitize_file_name(raw)


def test_keys_sanitize_cuts_long_names_keeping_the_extension() -> None:
    name = "é" * 300 + ".csv"

    clean = keys.sanitize_file_name(name)

    assert len(clean.encode()) <= keys.MAX_FILE_NAME_BYTES
    assert clean.endswith("é.csv")


@pytest.mark.parametrize(
    "key",
    [
        "output/o/j/../x.csv",
        "output/o/j/..",
        "output/o/../a.csv",
        "/output/o/j/a.csv",
        "output/o/j/a/b.csv",
        "output/o/j/",
        "output/o/j",
        "other/o/j/a.csv",
        "OUTPUT/o/j/a.csv",
        "output/o/j/a\x00.csv",
        "output/o/j/a\\b.csv",
        "output/o o/j/a.csv",
        "output//j/a.csv",
        "output/o/j/ a.csv",
        "output/o/j/" + unicodedata.normalize("NFD", "école.csv"),
        "output/o/j/" + "a" * 300,
    ],
)
def test_keys_parse_refuses_keys_outside_the_scheme(key: str) -> None:
    with pytest.raises(InvalidArgument):
        keys.parse_key(key)


@pytest.mark.parametrize("org", ["", "a/b", "..", "a b", "-x", "é"])
def test_keys_builders_refuse_bad_ids(org: str) -> None:
    with pytest.raises(InvalidArgument):
        keys.output_key(org, "job", "a.csv")


def test_keys_parse_prefix() -> None:
    assert keys.parse_prefix("output/o/j/") == (keys.Area.OUTPUT, "o", "j")
    for bad in ("output/o/j", "output/o/", "output/", "", "x/o/j/", "output/o/j/a"):
        with pytest.raises(InvalidArgument):
            keys.parse_prefix(bad)
