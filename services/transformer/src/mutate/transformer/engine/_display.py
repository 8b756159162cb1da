"""DISPLAYED values: a number shown through its number format, en-US style.

Covers what spreadsheets commonly use: General, fixed decimals, thousands
separators, percentages, scientific notation, simple fractions, literal text
and currency, sections for negatives and zero, conditions, and the date, time
and elapsed-time tokens. Colours and locale tags are ignored.
"""

from __future__ import annotations

import datetime
import math
import re

from ._values import FormatKind, classify_format, serial_to_value

__all__ = ["display_number", "general_text"]

# TODO: locale tags ([$-ja-JP], [$-F800] system long date) are dropped and the
# en-US names and separators used; Excel would follow the tag.

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_CONDITION = re.compile(r"\[(<=|>=|<>|<|>|=)(-?[0-9.]+)\]")
_CURRENCY = re.compile(r"\[\$([^\]-]*)(?:-[0-9A-Fa-f]+)?\]")
_DATE_TOKEN = re.compile(
    r'"[^"]*"|\\.|\[h+\]|\[m+\]|\[s+\]|am/pm|a/p|y+|m+|d+|h+|s+(?:\.0+)?|e|.',
    re.IGNORECASE,
)


def general_text(value: float) -> str:
    """Excel's General: up to 11 significant characters, scientific when large."""
    value = float(value)
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e11:
        return str(int(value))
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 11 or magnitude < -9:
        mantissa, exponent = f"{value:.5E}".split("E")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}E{int(exponent):+03d}"
    digits = max(0, 10 - max(magnitude, 0))
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def display_number(value: float, code: str, date1904: bool) -> str:
    """`value` formatted by the number format `code`."""
    value = float(value)
    sections = _sections(code)
    section, value_shown = _pick_section(sections, value)
    section = _CURRENCY.sub(lambda m: m.group(1), section)
    section = re.sub(
        r"\[(?:[A-Za-z]+[0-9]*|<=?|>=?|=|<>)[^\]]*\]", _keep_elapsed, section
    )
    if section.strip().lower() in ("general", ""):
        return general_text(value_shown) if section.strip() else ""
    kind = classify_format(0, section)
    if kind in (
        FormatKind.DATE,
        FormatKind.TIME,
        FormatKind.DATETIME,
        FormatKind.DURATION,
    ):
        return _display_temporal(value, section, kind, date1904)
    if "@" in section:
        return _literal(section).replace("@", general_text(value))
    return _display_numeric(value_shown, section)


def _keep_elapsed(match: re.Match[str]) -> str:
    token = match.group(0)
    return token if re.fullmatch(r"\[(h+|m+|s+)\]", token, re.IGNORECASE) else ""


def _sections(code: str) -> list[str]:
    sections, current, quoted = [], "", False
    for char in code:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            sections.append(current)
            current = ""
        else:
            current += char
    sections.append(current)
    return sections


def _pick_section(sections: list[str], value: float) -> tuple[str, float]:
    conditions = [_CONDITION.search(s) for s in sections]
    if any(conditions):
        for section, condition in zip(sections, conditions, strict=False):
            if condition and _holds(
                value, condition.group(1), float(condition.group(2))
            ):
                return section, abs(value) if value < 0 else value
        return sections[-1], value
    if value < 0 and len(sections) > 1:
        return sections[1], -value
    if value == 0 and len(sections) > 2:
        return sections[2], value
    return sections[0], value


def _holds(value: float, operator: str, bound: float) -> bool:
    return {
        "<": value < bound,
        "<=": value <= bound,
        ">": value > bound,
        ">=": value >= bound,
        "=": value == bound,
        "<>": value != bound,
    }[operator]


def _literal(section: str) -> str:
    section = re.sub(r'"([^"]*)"', r"\1", section)
    section = re.sub(r"\\(.)", r"\1", section)
    section = re.sub(r"_.", " ", section)
    return re.sub(r"\*.", "", section)


def _display_numeric(value: float, section: str) -> str:
    literal_free = re.sub(r'"[^"]*"|\\.', "", section)
    if "%" in literal_free:
        value *= 100 ** literal_free.count("%")
    if re.search(r"[0#?]\s*/\s*[0-9#?]", literal_free):
        return _literal(_fraction(value, section))
    match = re.search(
        r"[0#?,.]*[0#?](?:[.][0#?]*)?(?:E[+-][0#]+)?[0#?,]*", section, re.I
    )
    if match is None:
        return _literal(section)
    pattern = match.group(0)
    trailing_commas = len(pattern) - len(pattern.rstrip(","))
    pattern = pattern.rstrip(",")
    value /= 1000**trailing_commas
    shown = _digits(value, pattern)
    return _literal(section[: match.start()]) + shown + _literal(section[match.end() :])


def _digits(value: float, pattern: str) -> str:
    exponent_match = re.search(r"E([+-])([0#]+)", pattern, re.I)
    mantissa_pattern = pattern[: exponent_match.start()] if exponent_match else pattern
    integer_pattern, _, decimal_pattern = mantissa_pattern.partition(".")
    decimals = sum(1 for c in decimal_pattern if c in "0#?")
    if exponent_match:
        # "##0.0E+0" groups the exponent in steps of the integer digits.
        step = max(1, sum(1 for c in integer_pattern if c in "0#?"))
        step = step if step > 1 and "#" in integer_pattern else 1
        exponent = math.floor(math.log10(abs(value))) if value else 0
        exponent -= exponent % step
        mantissa = value / 10**exponent
        body = f"{mantissa:.{decimals}f}"
        sign = "-" if exponent < 0 else ("+" if exponent_match.group(1) == "+" else "")
        width = len(exponent_match.group(2))
        return f"{body}E{sign}{abs(exponent):0{width}d}"
    rounded = f"{abs(value):.{decimals}f}"
    whole, _, fraction = rounded.partition(".")
    minimum = integer_pattern.count("0")
    whole = whole.lstrip("0").rjust(minimum, "0")
    if "," in integer_pattern and whole:
        whole = f"{int(whole):,}"
    required = decimal_pattern.count("0")
    fraction = fraction.rstrip("0").ljust(required, "0")
    text = whole + (
        "." + fraction if fraction or decimal_pattern.startswith("0") else ""
    )
    if decimal_pattern and not fraction and "." in mantissa_pattern:
        text = whole + "."
    if not text:
        text = "0" if minimum else ""
    return ("-" if value < 0 and float(rounded) != 0 else "") + text


def _fraction(value: float, section: str) -> str:
    denominator_match = re.search(r"/\s*([0-9]+|[?#]+)", section)
    whole_part = re.match(r"\s*[#0?]+\s+", section)
    sign = "-" if value < 0 else ""
    value = abs(value)
    whole = int(value) if whole_part else 0
    rest = value - whole
    spec = denominator_match.group(1) if denominator_match else "?"
    if spec.isdigit():
        denominator = int(spec)
        numerator = round(rest * denominator)
    else:
        limit = 10 ** len(spec) - 1
        best = min(
            ((round(rest * d), d) for d in range(1, limit + 1)),
            key=lambda pair: abs(rest - pair[0] / pair[1]),
        )
        numerator, denominator = best
    if numerator == denominator:
        whole, numerator = whole + 1, 0
    if numerator == 0:
        return f"{sign}{whole}"
    if whole_part:
        return f"{sign}{whole} {numerator}/{denominator}"
    return f"{sign}{numerator + whole * denominator}/{denominator}"


def _display_temporal(
    value: float, section: str, kind: FormatKind, date1904: bool
) -> str:
    if kind is not FormatKind.DURATION and (
        value < 0 or (value < 1 and not date1904 and kind is not FormatKind.TIME)
    ):
        return general_text(value)
    tokens = _DATE_TOKEN.findall(section)
    # Without a sub-second token the display rounds to the nearest second.
    if not any(re.fullmatch(r"s+\.0+", t, re.IGNORECASE) for t in tokens):
        value = round(value * 86400) / 86400
    moment = serial_to_value(value, FormatKind.DATETIME, date1904)
    if not isinstance(moment, datetime.datetime):
        moment = datetime.datetime(1899, 12, 31) + datetime.timedelta(days=value % 1)
    twelve = any(t.lower() in ("am/pm", "a/p") for t in tokens)
    total_seconds = value * 86400
    out: list[str] = []
    previous = ""
    for index, token in enumerate(tokens):
        lower = token.lower()
        if lower.startswith('"') or token.startswith("\\"):
            out.append(token.strip('"') if token.startswith('"') else token[1:])
            continue
        if lower.startswith("["):
            unit = {"h": 3600, "m": 60, "s": 1}[lower[1]]
            amount = int(abs(total_seconds) // unit)
            out.append(
                ("-" if value < 0 else "") + str(amount).rjust(len(lower) - 2, "0")
            )
        elif lower[0] == "y":
            out.append(str(moment.year)[-2:] if len(lower) <= 2 else str(moment.year))
        elif lower[0] == "m":
            following = next(
                (t.lower() for t in tokens[index + 1 :] if t.strip(" :/-.,")), ""
            )
            if previous.startswith(("h", "[h")) or following.startswith("s"):
                out.append(f"{moment.minute:0{min(len(lower), 2)}d}")
            elif len(lower) <= 2:
                out.append(f"{moment.month:0{len(lower)}d}")
            else:
                name = _MONTHS[moment.month - 1]
                out.append(name[: {3: 3, 5: 1}.get(len(lower), len(name))])
        elif lower[0] == "d":
            if len(lower) <= 2:
                out.append(f"{moment.day:0{len(lower)}d}")
            else:
                name = _DAYS[moment.weekday()]
                out.append(name[:3] if len(lower) == 3 else name)
        elif lower[0] == "h":
            hour = moment.hour % 12 or 12 if twelve else moment.hour
            out.append(f"{hour:0{min(len(lower), 2)}d}")
        elif lower[0] == "s":
            seconds, _, fraction = lower.partition(".")
            out.append(f"{moment.second:0{min(len(seconds), 2)}d}")
            if fraction:
                shown = f"{moment.microsecond / 1e6:.{len(fraction)}f}"[1:]
                out.append(shown)
        elif lower in ("am/pm", "a/p"):
            pm = moment.hour >= 12
            text = ("PM" if pm else "AM") if lower == "am/pm" else ("P" if pm else "A")
            out.append(text if token[0].isupper() else text.lower())
        elif lower == "e":
            out.append(str(moment.year))
        else:
            out.append(token.replace("_", "").replace("*", ""))
        if lower.strip(" :/-.,"):
            previous = lower
    return "".join(out)
