"""The object-key scheme every service builds and the storage service enforces.

Keys have exactly three levels below an area (ARCHITECTURE "Object keys")::

    uploads/{organization}/{upload}/{file name}   presigned uploads
    input/{organization}/{job}/{file name}        a job's input
    output/{organization}/{job}/{file name}       a job's result

Organization and owner ids are plain identifiers. File names keep what users
type (spaces, accents, emoji, `+`, `=`, brackets) but can never add a level or
leave the prefix: `sanitize_file_name` neutralises separators, dot segments
and control characters, and `parse_key` refuses any key that is not exactly
what the builders produce, so a key received over the wire is as safe as one
built here.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from dataclasses import dataclass

from mutate.common.errors import InvalidArgument

# Org, upload and job ids: what the gateway generates (prefixed ULIDs/UUIDs).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

# S3 allows 1024 bytes a key; file systems 255 bytes a name. Keep to the
# latter so a downloaded file can be saved under the same name.
MAX_FILE_NAME_BYTES = 255


class Area(enum.Enum):
    """The top-level prefixes of the bucket."""

    UPLOADS = "uploads"
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class ObjectKey:
    """A key taken apart: `area/org/owner_id/file_name`."""

    area: Area
    org: str
    owner_id: str
    file_name: str

    def __str__(self) -> str:
        return f"{self.area.value}/{self.org}/{self.owner_id}/{self.file_name}"

    @property
    def prefix(self) -> str:
        return job_prefix(self.area, self.org, self.owner_id)


def _is_control(char: str) -> bool:
    # Cc: C0/C1 controls; Cf: invisible format characters (bidi overrides
    # can make `exe.csv` display as `vsc.exe`); Zl/Zp: line separators.
    # U+200D (zero-width joiner) is Cf but holds emoji sequences together.
    if char == "\u200d":
        return False
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co")


def sanitize_file_name(name: str) -> str:
    """Make `name` safe as the last level of a key, keeping what users typed.

    Directory parts are dropped (`C:\\temp\\a.csv` and `../../a.csv` become
    `a.csv`, as browsers do with uploads), control characters are removed,
    Unicode is normalised to NFC, and over-long names are cut to 255 UTF-8
    bytes keeping the extension. A name with nothing left (``..``, spaces)
    is refused.
    """
    text = unicodedata.normalize("NFC", name)
    text = "".join(c for c in text if not _is_control(c))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = text.strip().strip(".").strip()
    if not text:
        raise InvalidArgument(
            f"file name {name!r} has no usable characters",
            field_violations=[("file_name", "empty after removing path parts")],
        )
    return _truncate(text)


def _truncate(name: str) -> str:
    if len(name.encode()) <= MAX_FILE_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext, dot = name, "", ""
    budget = MAX_FILE_NAME_BYTES - len((dot + ext).encode())
    cut = stem.encode()[:budget].decode(errors="ignore").rstrip()
    return f"{cut}{dot}{ext}"


def _check_id(what: str, value: str) -> str:
    if not _ID.fullmatch(value):
        raise InvalidArgument(
            f"{what} {value!r} is not a valid identifier",
            field_violations=[(what, "letters, digits, _ and - only, 1-128")],
        )
    return value


def build_key(area: Area, org: str, owner_id: str, file_name: str) -> str:
    """The key of `file_name` under `area/org/owner_id/`, name sanitised."""
    _check_id("organization", org)
    _check_id("owner_id", owner_id)
    return f"{area.value}/{org}/{owner_id}/{sanitize_file_name(file_name)}"


def upload_key(org: str, upload_id: str, file_name: str) -> str:
    return build_key(Area.UPLOADS, org, upload_id, file_name)


def input_key(org: str, job_id: str, file_name: str) -> str:
    return build_key(Area.INPUT, org, job_id, file_name)


def output_key(org: str, job_id: str, file_name: str) -> str:
    return build_key(Area.OUTPUT, org, job_id, file_name)


def job_prefix(area: Area, org: str, owner_id: str) -> str:
    """`area/org/owner_id/`: every file of one job (or upload) in one area."""
    _check_id("organization", org)
    _check_id("owner_id", owner_id)
    return f"{area.value}/{org}/{owner_id}/"


def _area(value: str, key: str) -> Area:
    try:
        return Area(value)
    except ValueError:
        areas = ", ".join(a.value for a in Area)
        raise InvalidArgument(
            f"key {key!r} is outside the key scheme (area must be one of {areas})",
            field_violations=[("key", "unknown area")],
        ) from None


def parse_key(key: str) -> ObjectKey:
    """Take a key apart, refusing anything the builders would not produce."""
    parts = key.split("/")
    if len(parts) != 4:
        raise InvalidArgument(
            f"key {key!r} must be area/organization/owner/file name",
            field_violations=[("key", "wrong number of levels")],
        )
    area_part, org, owner_id, file_name = parts
    area = _area(area_part, key)
    _check_id("organization", org)
    _check_id("owner_id", owner_id)
    try:
        canonical: str | None = sanitize_file_name(file_name)
    except InvalidArgument:
        canonical = None
    if canonical != file_name:
        raise InvalidArgument(
            f"key {key!r} has an unsafe file name",
            field_violations=[("key", "file name is not in canonical form")],
        )
    return ObjectKey(area=area, org=org, owner_id=owner_id, file_name=file_name)


def parse_prefix(prefix: str) -> tuple[Area, str, str]:
    """Check a `area/org/owner_id/` prefix; returns its three parts."""
    parts = prefix.split("/")
    if len(parts) != 4 or parts[3] != "":
        raise InvalidArgument(
            f"prefix {prefix!r} must be area/organization/owner/",
            field_violations=[("prefix", "wrong number of levels")],
        )
    area = _area(parts[0], prefix)
    return area, _check_id("organization", parts[1]), _check_id("owner_id", parts[2])


# --- keys in messages for people ---------------------------------------------
# Keys are how services name files to each other; a job's owner knows the job
# and its file name. Storage quotes the key of an object it refuses, so a text
# meant for users passes through `without_storage_keys` first.

_FILE_OF_AREA = {
    "uploads": "the uploaded file",
    "input": "the input file",
    "output": "the output file",
}
# The word a message puts before a key ("object 'input/…'") goes with it.
_KEY_NOUN = r"(?:\b(?:object|upload|key)\s+)?"
# Punctuation ending the sentence is not part of an unquoted key.
_BARE_END = r"\S*?(?=[.,;:!?)\]]*(?:\s|$))"


@functools.lru_cache(maxsize=256)
def _key_patterns(organization_id: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Quoted and bare keys: `area/org/owner/` as `build_key` makes it, then
    the file name; of one organization, or of any when it is empty."""
    org = re.escape(organization_id) if organization_id else r"[A-Za-z0-9][\w-]*"
    head = rf"(?P<area>uploads|input|output)/{org}/[A-Za-z0-9][\w-]*/"
    quoted = re.compile(
        _KEY_NOUN + r"(?P<quote>['\"])" + head + r"(?:\\.|(?!(?P=quote)).)*(?P=quote)"
    )
    # TODO: an unquoted key ends at the first space, so the rest of a file
    # name with spaces stays; storage and the transformer quote keys (repr).
    bare = re.compile(_KEY_NOUN + r"\b" + head + _BARE_END)
    return quoted, bare


def without_storage_keys(text: str, organization_id: str = "") -> str:
    """`text` with every object key replaced by what the file is to the user.

    With `organization_id`, only that organization's keys: a text that also
    quotes what a user typed (a header named `output/q1/report/total`) keeps
    it, as a real key always carries the organization's id.
    """

    def file_of(match: re.Match[str]) -> str:
        return _FILE_OF_AREA[match["area"]]

    quoted, bare = _key_patterns(organization_id)
    return bare.sub(file_of, quoted.sub(file_of, text))


__all__ = [
    "MAX_FILE_NAME_BYTES",
    "Area",
    "ObjectKey",
    "build_key",
    "input_key",
    "job_prefix",
    "output_key",
    "parse_key",
    "parse_prefix",
    "sanitize_file_name",
    "upload_key",
    "without_storage_keys",
]
