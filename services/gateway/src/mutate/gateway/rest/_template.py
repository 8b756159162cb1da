"""HttpRule path templates: parsing and matching.

The grammar is google/api/http.proto's::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

A request path is split the same way before matching: the text after the last
":" of the last raw segment is its verb, so `/v1/jobs/abc:cancel` is the path
`/v1/jobs/abc` with verb `cancel` and never the id "abc:cancel" of
`/v1/jobs/{id}` (a literal colon in an id must be sent as %3A).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[^/{}*:=]+")


class TemplateError(ValueError):
    """An HttpRule path does not follow the template grammar."""


class SegmentKind(enum.Enum):
    LITERAL = "literal"
    # `*`: exactly one segment.
    SINGLE = "single"
    # `**`: zero or more segments; only last.
    MULTI = "multi"


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    literal: str = ""


@dataclass(frozen=True)
class Variable:
    """A `{field.path=...}` capture over segments [start, end)."""

    field_path: str
    start: int
    # None when the capture runs to the end (it holds `**`).
    end: int | None


@dataclass(frozen=True)
class PathTemplate:
    text: str
    segments: tuple[Segment, ...]
    variables: tuple[Variable, ...]
    verb: str | None

    @property
    def has_multi(self) -> bool:
        return bool(self.segments) and self.segments[-1].kind is SegmentKind.MULTI

    def match(self, parts: list[str], verb: str | None) -> dict[str, str] | None:
        """The captured variables if `parts` (raw, still percent-encoded) match."""
        if verb != self.verb:
            return None
        count = len(self.segments)
        if self.has_multi:
            if len(parts) < count - 1:
                return None
        elif len(parts) != count:
            return None
        for segment, part in zip(self.segments, parts, strict=False):
            if segment.kind is SegmentKind.LITERAL:
                if part != segment.literal and unquote(part) != segment.literal:
                    return None
            elif segment.kind is SegmentKind.SINGLE and not part:
                return None
        captured: dict[str, str] = {}
        for variable in self.variables:
            end = len(parts) if variable.end is None else variable.end
            chosen = parts[variable.start : end]
            if len(chosen) == 1:
                captured[variable.field_path] = unquote(chosen[0])
            else:
                # Multi-segment captures keep an encoded "/" encoded (http.proto).
                captured[variable.field_path] = "/".join(
                    unquote(p.replace("%2F", "%252F").replace("%2f", "%252f"))
                    for p in chosen
                )
        return captured

    def shape(self) -> str:
        """The template with captures erased: equal shapes match equal paths."""
        parts = [
            s.literal if s.kind is SegmentKind.LITERAL else s.kind.value
            for s in self.segments
        ]
        return "/" + "/".join(parts) + (f":{self.verb}" if self.verb else "")

    def openapi_names(self) -> dict[str, str]:
        """OpenAPI parameter names of the captures: the last field name.

        Tools format paths with str.format, where `{configuration.id}` means
        attribute access; `{id}` reads better too. Clashing last names fall
        back to the whole path joined with "_".
        """
        last = [v.field_path.rsplit(".", 1)[-1] for v in self.variables]
        return {
            v.field_path: name
            if last.count(name) == 1
            else v.field_path.replace(".", "_")
            for v, name in zip(self.variables, last, strict=True)
        }

    def openapi_path(self) -> str:
        """The template as an OpenAPI path, `{name}` for every capture."""
        names = self.openapi_names()
        out: list[str] = []
        index = 0
        by_start = {v.start: v for v in self.variables}
        while index < len(self.segments):
            variable = by_start.get(index)
            if variable is not None:
                out.append("{" + names[variable.field_path] + "}")
                if variable.end is None:
                    break
                index = variable.end
                continue
            segment = self.segments[index]
            out.append(segment.literal if segment.literal else "*")
            index += 1
        path = "/" + "/".join(out)
        return f"{path}:{self.verb}" if self.verb else path


def split_path(raw_path: str) -> tuple[list[str], str | None]:
    """A raw request path as (segments, verb), following the template grammar."""
    parts = raw_path[1:].split("/") if raw_path.startswith("/") else [raw_path]
    last = parts[-1]
    colon = last.rfind(":")
    if colon < 0:
        return parts, None
    parts[-1] = last[:colon]
    return parts, last[colon + 1 :]


def parse_template(text: str) -> PathTemplate:
    """Parse an HttpRule path such as `/v1/{configuration.id}:test`."""
    if not text.startswith("/"):
        raise TemplateError(f"{text!r}: a template starts with '/'")
    body, verb = _split_verb(text)
    segments: list[Segment] = []
    variables: list[Variable] = []
    for raw in _split_top_level(body[1:]):
        if raw.startswith("{"):
            if not raw.endswith("}"):
                raise TemplateError(f"{text!r}: unclosed variable {raw!r}")
            field_path, _, sub = raw[1:-1].partition("=")
            if not all(_IDENT.fullmatch(p) for p in field_path.split(".")):
                raise TemplateError(f"{text!r}: bad field path {field_path!r}")
            inner = [_parse_segment(text, s) for s in (sub or "*").split("/")]
            start = len(segments)
            segments.extend(inner)
            multi = inner[-1].kind is SegmentKind.MULTI
            variables.append(
                Variable(field_path, start, None if multi else len(segments))
            )
        else:
            segments.append(_parse_segment(text, raw))
    for index, segment in enumerate(segments[:-1]):
        if segment.kind is SegmentKind.MULTI:
            raise TemplateError(f"{text!r}: '**' must be the last segment (#{index})")
    if verb is not None and not _LITERAL.fullmatch(verb):
        raise TemplateError(f"{text!r}: bad verb {verb!r}")
    return PathTemplate(text, tuple(segments), tuple(variables), verb)


def _parse_segment(text: str, raw: str) -> Segment:
    if raw == "*":
        return Segment(SegmentKind.SINGLE)
    if raw == "**":
        return Segment(SegmentKind.MULTI)
    if not _LITERAL.fullmatch(raw):
        raise TemplateError(f"{text!r}: bad segment {raw!r}")
    return Segment(SegmentKind.LITERAL, raw)


def _split_verb(text: str) -> tuple[str, str | None]:
    depth = 0
    colon = -1
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "/" and depth == 0:
            colon = -1
        elif char == ":" and depth == 0:
            colon = index
    if depth != 0:
        raise TemplateError(f"{text!r}: unbalanced braces")
    if colon < 0:
        return text, None
    return text[:colon], text[colon + 1 :]


def _split_top_level(body: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in body:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "/" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
