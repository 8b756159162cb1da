"""Configuration checks that run before any file is touched."""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from google.protobuf import descriptor
from google.protobuf.message import Message

from mutate.v1 import configuration_pb2 as cfg

from ._rules import parse_row_ranges
from ._values import column_index

__all__ = ["validate_configuration", "MAX_RULES", "PARAM_FIELDS", "RULE_TYPE_OF"]

#: Most rules one configuration may hold. Real ones hold a handful (the
#: examples 3 to 5); most rules are another pass over the whole table, and every
#: saved version stores the whole list, so a far longer one is a mistake or
#: abuse: 100,000 rules (5.5 MB of JSON) used to be accepted and stored.
MAX_RULES = 1000

#: oneof field name → rule type.
RULE_TYPE_OF: dict[str, cfg.RuleType.ValueType] = {
    "select_worksheet": cfg.SELECT_WORKSHEET,
    "validate_columns": cfg.VALIDATE_COLUMNS,
    "unmerge_and_fill": cfg.UNMERGE_AND_FILL,
    "delete_rows": cfg.DELETE_ROWS,
    "delete_columns": cfg.DELETE_COLUMNS,
    "combine_worksheets": cfg.COMBINE_WORKSHEETS,
    "evaluate_formulas": cfg.EVALUATE_FORMULAS,
    "replace_characters": cfg.REPLACE_CHARACTERS,
}
PARAM_FIELDS = {value: key for key, value in RULE_TYPE_OF.items()}
_WORKBOOK_ONLY = {
    cfg.SELECT_WORKSHEET,
    cfg.UNMERGE_AND_FILL,
    cfg.COMBINE_WORKSHEETS,
    cfg.EVALUATE_FORMULAS,
}
_TEXT_INPUTS = {cfg.CSV_TO_CSV, cfg.CSV_TO_JSON, cfg.JSON_TO_CSV}
_CSV_OUTPUTS = {cfg.XLSX_TO_CSV, cfg.CSV_TO_CSV, cfg.JSON_TO_CSV}


#: (field path below the checked part, message) pairs.
Found = Iterator[tuple[str, str]]


@dataclass(frozen=True)
class _Problem:
    rule_id: str
    field: str
    message: str


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def validate_configuration(
    configuration: cfg.Configuration,
) -> list[cfg.ConfigurationProblem]:
    """Every problem found; an empty list means the configuration is valid."""
    return [
        cfg.ConfigurationProblem(rule_id=p.rule_id, field=p.field, message=p.message)
        for p in _problems(configuration)
    ]


def _problems(configuration: cfg.Configuration) -> Iterator[_Problem]:
    if len(configuration.rules) > MAX_RULES:
        # One problem, not one per rule: walking them would cost as much as
        # the abuse this limit stops.
        yield _Problem(
            "",
            "rules",
            f"a configuration may hold at most {MAX_RULES} rules; this one has "
            f"{len(configuration.rules)}",
        )
        return
    undefined = list(_undefined_enums(configuration))
    if undefined:
        # proto3 enums are open: JSON `99` parses. Every other check (and the
        # engine) reads enums by name, and what a rule means depends on them.
        yield from undefined
        return
    yield from _check_options(configuration)
    ids: dict[str, int] = {}
    for index, rule in enumerate(configuration.rules):
        where = f"rules[{index}]"
        if not rule.id.strip():
            yield _Problem("", f"{where}.id", "every rule needs an id")
        elif rule.id in ids:
            yield _Problem(
                rule.id,
                f"{where}.id",
                f"id {rule.id!r} is already used by rules[{ids[rule.id]}]",
            )
        else:
            ids[rule.id] = index
    for index, rule in enumerate(configuration.rules):
        yield from _check_rule(configuration, index, rule, ids)


def _undefined_enums(configuration: cfg.Configuration) -> Iterator[_Problem]:
    """Enum fields anywhere in the configuration holding an undefined number."""
    for field_path, message in _undefined_in_message(configuration, ""):
        rule = re.match(r"rules\[(\d+)\]", field_path)
        rule_id = configuration.rules[int(rule.group(1))].id if rule else ""
        yield _Problem(rule_id, field_path, message)


def _undefined_in_message(message: Message, path: str) -> Found:
    for field, value in message.ListFields():
        where = f"{path}.{field.json_name}" if path else field.json_name
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            for key, item in value.items():
                yield from _undefined_in_value(value_field, item, f"{where}.{key}")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _undefined_in_value(field, item, f"{where}[{index}]")
        else:
            yield from _undefined_in_value(field, value, where)


def _undefined_in_value(
    field: descriptor.FieldDescriptor, value: object, path: str
) -> Found:
    enum = field.enum_type
    if enum is not None and isinstance(value, int):
        if value not in enum.values_by_number:
            named = ", ".join(v.name for v in enum.values if v.number != 0)
            yield path, f"{value} is not one of {named}"
    elif isinstance(value, Message):
        yield from _undefined_in_message(value, path)


def _check_options(configuration: cfg.Configuration) -> Iterator[_Problem]:
    options = configuration.read_options
    if options.HasField("header_row") and options.header_row < 0:
        yield _Problem(
            "", "readOptions.headerRow", "must be 0 (no header) or a row number"
        )
    if options.csv_delimiter and (
        len(options.csv_delimiter) != 1 or options.csv_delimiter in '"\r\n'
    ):
        yield _Problem(
            "",
            "readOptions.csvDelimiter",
            "must be one character other than a quote or a line break",
        )
    problem = _codec_problem(options.csv_encoding)
    if problem:
        yield _Problem("", "readOptions.csvEncoding", problem)
    fmt = configuration.output_format
    if fmt.delimiter and (len(fmt.delimiter) != 1 or fmt.delimiter in '"\r\n'):
        yield _Problem(
            "",
            "outputFormat.delimiter",
            "must be one character other than a quote or a line break",
        )
    problem = _codec_problem(fmt.encoding)
    if problem:
        yield _Problem("", "outputFormat.encoding", problem)
    if fmt.line_terminator and fmt.line_terminator not in ("\n", "\r\n", "\r"):
        yield _Problem(
            "", "outputFormat.lineTerminator", 'must be "\\n", "\\r\\n" or "\\r"'
        )
    conversion = configuration.conversion_type
    if fmt.type == cfg.OutputFormat.CSV and conversion in (
        cfg.XLSX_TO_JSON,
        cfg.CSV_TO_JSON,
    ):
        yield _Problem(
            "",
            "outputFormat.type",
            "CSV output contradicts conversionType "
            + cfg.ConversionType.Name(conversion),
        )
    if (
        fmt.type in (cfg.OutputFormat.JSON, cfg.OutputFormat.NDJSON)
        and conversion in _CSV_OUTPUTS
    ):
        yield _Problem(
            "",
            "outputFormat.type",
            f"{cfg.OutputFormat.Type.Name(fmt.type)} output contradicts conversionType "
            f"{cfg.ConversionType.Name(conversion)}",
        )
    url = configuration.webhook_url
    if url and not re.match(r"https?://[^\s/]+", url):
        yield _Problem("", "webhookUrl", "must be an http or https URL")


# Text codecs that are not character sets: they mangle or drop CSV text.
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"}
)


def _codec_problem(name: str) -> str | None:
    """Why `name` cannot encode CSV/JSON text (rot13, base64, idna…), if so."""
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return f"unknown encoding {name!r}"
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return f"{name!r} is not a character encoding"
    return None


def _check_rule(
    configuration: cfg.Configuration, index: int, rule: cfg.Rule, ids: dict[str, int]
) -> Iterator[_Problem]:
    where = f"rules[{index}]"
    which = rule.WhichOneof("params")
    if which is None:
        yield _Problem(
            rule.id, where, "the rule has no parameter block (e.g. deleteRows)"
        )
        return
    rule_type = RULE_TYPE_OF[which]
    if rule.type not in (cfg.RULE_TYPE_UNSPECIFIED, rule_type):
        yield _Problem(
            rule.id,
            f"{where}.type",
            f"type {cfg.RuleType.Name(rule.type)} does not match the "
            f"{_camel(which)} parameters",
        )
    if configuration.conversion_type in _TEXT_INPUTS and rule_type in _WORKBOOK_ONLY:
        yield _Problem(
            rule.id,
            f"{where}.{_camel(which)}",
            f"{cfg.RuleType.Name(rule_type)} has nothing to act on for "
            f"{cfg.ConversionType.Name(configuration.conversion_type)} input",
        )
    params = getattr(rule, which)
    path = f"{where}.{_camel(which)}"
    checker = _CHECKERS.get(which)
    if checker is not None:
        for field, message in checker(params, ids, rule.id, configuration):
            yield _Problem(rule.id, f"{path}.{field}" if field else path, message)


def _regex_error(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None


def _select(params: cfg.SelectWorksheet, *_: object) -> Found:
    which = params.WhichOneof("selector")
    if which is None:
        yield "", "choose the sheet by name, index, pattern or regex"
    elif which == "index" and params.index < 0:
        yield "index", "must be 0 or more"
    elif which in ("name", "pattern", "regex") and not getattr(params, which):
        yield which, "must not be empty"
    elif which == "regex" and (error := _regex_error(params.regex)):
        yield "regex", error


def _validate(params: cfg.ValidateColumns, *_: object) -> Found:
    if not params.HasField("num_of_columns") and not params.required_headers:
        yield "", "give numOfColumns and/or requiredHeaders"
    if params.HasField("num_of_columns") and params.num_of_columns < 0:
        yield "numOfColumns", "must be 0 or more"
    for i, header in enumerate(params.required_headers):
        if not header.strip():
            yield f"requiredHeaders[{i}]", "must not be empty"


def _column_refs(columns: list[str], field: str, allow_all: bool) -> Found:
    for i, column in enumerate(columns):
        text = column.strip()
        if not text:
            yield f"{field}[{i}]", "must not be empty"
        elif allow_all and text.lower() == "all":
            continue


def _unmerge(params: cfg.UnmergeAndFill, *_: object) -> Found:
    if not params.columns:
        yield "columns", 'list column letters, or "all"'
    for i, column in enumerate(params.columns):
        text = column.strip()
        if text.lower() != "all" and column_index(text) is None:
            yield f"columns[{i}]", f'{column!r} is not a column letter or "all"'


def _delete_rows(params: cfg.DeleteRows, *_: object) -> Found:
    has_condition = params.condition != cfg.DeleteRows.CONDITION_UNSPECIFIED
    if has_condition and params.rows:
        yield "rows", "give either a condition or rows, not both"
    elif not has_condition and not params.rows:
        yield (
            "condition",
            "give a condition (CONTAINS, EQUALS, STARTS_WITH, REGEX, EMPTY) or rows",
        )
    if (
        has_condition
        and params.condition != cfg.DeleteRows.EMPTY
        and params.value == ""
    ):
        yield (
            "value",
            f"{cfg.DeleteRows.Condition.Name(params.condition)} needs a value",
        )
    if params.condition == cfg.DeleteRows.REGEX and (
        error := _regex_error(params.value)
    ):
        yield "value", error
    for i, spec in enumerate(params.rows):
        try:
            parse_row_ranges([spec])
        except ValueError as exc:
            yield f"rows[{i}]", str(exc)


def _delete_columns(params: cfg.DeleteColumns, *_: object) -> Found:
    if not params.columns and not params.empty:
        yield "columns", "list columns (letters or header names) or set empty"
    yield from _column_refs(list(params.columns), "columns", False)


def _combine(
    params: cfg.CombineWorksheets,
    ids: dict[str, int],
    rule_id: str,
    configuration: cfg.Configuration,
) -> Found:
    source = params.source
    if bool(source.worksheet_pattern) == bool(source.worksheet_regex):
        yield "source", "give exactly one of worksheetPattern and worksheetRegex"
    if source.worksheet_regex and (error := _regex_error(source.worksheet_regex)):
        yield "source.worksheetRegex", error
    if not params.target.worksheet:
        yield "target.worksheet", "name the sheet the others are stacked onto"
    for i, reference in enumerate(params.preprocessing):
        field = f"preprocessing[{i}]"
        if reference not in ids:
            yield field, f"no rule has id {reference!r}"
            continue
        if reference == rule_id:
            yield field, "a rule cannot preprocess for itself"
            continue
        kind = configuration.rules[ids[reference]].WhichOneof("params")
        if kind in ("select_worksheet", "combine_worksheets"):
            yield field, f"rule {reference!r} ({_camel(kind)}) cannot run per sheet"


def _replace(params: cfg.ReplaceCharacters, *_: object) -> Found:
    if params.find == "":
        yield "find", "must not be empty"
    elif params.regex:
        error = _regex_error(params.find)
        if error:
            yield "find", error
        else:
            try:
                re.compile(params.find).sub(params.replace, "")
                _check_template(params.find, params.replace)
            except (re.error, IndexError) as exc:
                yield "replace", f"invalid replacement: {exc}"
    yield from _column_refs(list(params.columns), "columns", False)


def _check_template(find: str, replace: str) -> None:
    # Group references are only resolved on a match: try one on a pattern
    # that has the same groups and always matches.
    compiled = re.compile(find)
    if compiled.groupindex:
        return  # named groups: resolved only against real matches
    groups = compiled.groups
    probe = re.compile("()" * groups)
    match = probe.match("")
    if match is not None:
        match.expand(replace)


_CHECKERS: dict[str, Callable[..., Found]] = {
    "select_worksheet": _select,
    "validate_columns": _validate,
    "unmerge_and_fill": _unmerge,
    "delete_rows": _delete_rows,
    "delete_columns": _delete_columns,
    "combine_worksheets": _combine,
    "replace_characters": _replace,
}
