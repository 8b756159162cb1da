"""Engine benchmark: one sheet to CSV, side by side with the practical floor.

    python benchmarks/engine_bench.py [--rows 200000] [--runs 1]

Generates (once, cached under .bench/) a workbook of ROWS rows x 12 columns:
ints, floats, strings, dates, date-times (every fifth exactly at midnight), times
and a duration column. Then, each in its own process so peak RSS is its own:

- floor: a bare python-calamine read + csv write (what any converter must pay);
- xlsx2csv 0.8.6;
- the engine with no rules (output checked byte for byte against the values
  the generator wrote, formatted independently here);
- the engine with a five-rule configuration (select, delete rows, delete
  columns, replace, validate), checked on its row count and sampled rows.

It prints seconds, the ratio to the floor and peak RSS, and the targets of
issue #3: no rules within 2x of the floor, five rules within 2.5x, RSS under
400 MB. Exit status 1 when an output is wrong, or (at 100,000 rows or more)
when a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import json
import os
import random
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / ".bench"
HEADER = [
    "id",
    "quantity",
    "price",
    "ratio",
    "name",
    "category",
    "code",
    "note",
    "day",
    "timestamp",
    "clock",
    "elapsed",
]
FORMATS = {8: "yyyy-mm-dd", 9: "yyyy-mm-dd hh:mm:ss", 10: "hh:mm:ss", 11: "[h]:mm:ss"}
CATEGORIES = ["alpha", "beta", "gamma", "delta", "Ωmega", "naïve", "東京"]
FIVE_RULES = {
    "conversionType": "XLSX_TO_CSV",
    "rules": [
        {"id": "sheet", "selectWorksheet": {"name": "Data"}},
        {
            "id": "drop-beta",
            "deleteRows": {
                "condition": "EQUALS",
                "column": "category",
                "value": "beta",
            },
        },
        {"id": "drop-cols", "deleteColumns": {"columns": ["ratio", "H"]}},
        {"id": "tidy", "replaceCharacters": {"find": "item ", "replace": "#"}},
        {
            "id": "check",
            "validateColumns": {
                "numOfColumns": 10,
                "requiredHeaders": ["id", "timestamp"],
            },
        },
    ],
}
TARGETS = {"engine, no rules": 2.0, "engine, five rules": 2.5}
MAX_RSS_MB = 400


# -- the workbook and its values


def row_values(index: int, rng: random.Random) -> list[object]:
    """Data row `index` (0-based); deterministic for a seeded rng."""
    base = datetime.datetime(2000, 1, 1) + datetime.timedelta(days=index % 9000)
    seconds = 0 if index % 5 == 0 else rng.randrange(1, 86400)
    return [
        index + 1,
        rng.randrange(-1000, 100000),
        round(rng.uniform(0, 10000), 2),
        rng.random(),
        f"item {index} {rng.choice(CATEGORIES)}",
        rng.choice(CATEGORIES),
        f"C{rng.randrange(10**6):06d}",
        "" if index % 7 else f'note, with "quotes" {index}',
        base.date(),
        base + datetime.timedelta(seconds=seconds),
        datetime.time(rng.randrange(24), rng.randrange(60), rng.randrange(60)),
        datetime.timedelta(seconds=rng.randrange(0, 400 * 3600)),
    ]


def generate(path: Path, rows: int, *, seed: int = 7) -> None:
    """Write the one-sheet workbook (plus an unused second sheet) to `path`."""
    rng = random.Random(seed)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Data")
    sheet.append(HEADER)
    for index in range(rows):
        cells: list[object] = []
        for column, value in enumerate(row_values(index, rng)):
            if value == "":
                cells.append(None)
            elif column in FORMATS:
                cell = WriteOnlyCell(sheet, value=value)
                cell.number_format = FORMATS[column]
                cells.append(cell)
            else:
                cells.append(value)
        sheet.append(cells)
    workbook.create_sheet("Other").append(["unused"])
    partial = path.with_suffix(".partial")
    workbook.save(partial)
    partial.replace(path)


def workbook_path(rows: int) -> Path:
    path = BENCH_DIR / f"workbook-{rows}.xlsx"
    if not path.exists():
        BENCH_DIR.mkdir(exist_ok=True)
        print(f"generating {path.name} ...", flush=True)
        generate(path, rows)
    return path


# -- the expected output, formatted here independently of the engine


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        # openpyxl stores floats as "%.16g" (openpyxl.compat.strings).
        value = float(f"{value:.16g}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        seconds = int(value.total_seconds())
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return str(value)


def expected_rows(rows: int) -> list[list[str]]:
    rng = random.Random(7)
    return [HEADER] + [[_text(v) for v in row_values(i, rng)] for i in range(rows)]


def expected_five_rules(rows: list[list[str]]) -> list[list[str]]:
    keep = [rows[0]] + [r for r in rows[1:] if r[5].casefold() != "beta"]
    cut = [[v for i, v in enumerate(r) if i not in (3, 7)] for r in keep]
    return [cut[0]] + [[v.replace("item ", "#") for v in r] for r in cut[1:]]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def sample_check(got: list[list[str]], want: list[list[str]]) -> str:
    """'ok' or the first differences; samples every 97th row, first and last."""
    if len(got) != len(want):
        return f"{len(got)} rows, expected {len(want)}"
    picks = sorted({0, 1, len(want) - 1, *range(1, len(want), 97)})
    wrong = [i for i in picks if got[i] != want[i]]
    if not wrong:
        return "ok"
    first = wrong[0]
    return (
        f"{len(wrong)}/{len(picks)} sampled rows differ, e.g. row {first}: {got[first]}"
    )


# -- measured runs, one process each


_FLOOR = """
import csv, python_calamine
book = python_calamine.CalamineWorkbook.from_path(SOURCE)
with open(OUTPUT, "w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    for row in book.get_sheet_by_index(0).iter_rows():
        writer.writerow(row)
"""
_XLSX2CSV = """
from xlsx2csv import Xlsx2csv
Xlsx2csv(SOURCE, outputencoding="utf-8").convert(OUTPUT, sheetid=1)
"""
_ENGINE = """
from google.protobuf import json_format
from mutate.v1 import configuration_pb2
from mutate.transformer.engine import convert
configuration = json_format.ParseDict(CONFIG, configuration_pb2.Configuration())
with open(SOURCE, "rb") as handle:
    data = handle.read()
with open(OUTPUT, "wb") as handle:
    convert(data, "bench.xlsx", configuration, handle)
"""
_HARNESS = """
import json, sys, time
SOURCE, OUTPUT, CONFIG = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
{imports}
started = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - started}}))
"""


@dataclass
class Measure:
    name: str
    seconds: float
    rss_mb: float
    output: Path
    cpu_seconds: float = 0.0
    check: str = ""


def run(rows: int, runs: int) -> int:
    source = workbook_path(rows)
    print(
        f"workbook: {source} ({source.stat().st_size / 1e6:.1f} MB, {rows} rows x 12)"
    )
    plans = [
        ("floor: calamine + csv", _FLOOR, {}),
        ("xlsx2csv", _XLSX2CSV, {}),
        ("engine, no rules", _ENGINE, {}),
        ("engine, five rules", _ENGINE, FIVE_RULES),
    ]
    if importlib.util.find_spec("xlsx2csv") is None:
        print("xlsx2csv is not installed: its row is left out")
        plans = [plan for plan in plans if plan[0] != "xlsx2csv"]
    best: dict[str, Measure] = {}
    for _ in range(runs):
        for name, body, config in plans:
            result = _measure_isolated(name, body, source, config)
            if name not in best or result.seconds < best[name].seconds:
                best[name] = result
    want = expected_rows(rows)
    best["engine, no rules"].check = (
        "exact"
        if read_csv(best["engine, no rules"].output) == want
        else sample_check(read_csv(best["engine, no rules"].output), want)
    )
    best["engine, five rules"].check = sample_check(
        read_csv(best["engine, five rules"].output), expected_five_rules(want)
    )
    if "xlsx2csv" in best:
        best["xlsx2csv"].check = sample_check(read_csv(best["xlsx2csv"].output), want)
    best["floor: calamine + csv"].check = "(floor: python reprs, not checked)"
    return report(best, enforce=rows >= 100_000)


def _measure_isolated(
    name: str, body: str, source: Path, config: dict[str, object]
) -> Measure:
    # Popen + wait4 gives each child's own peak RSS.
    output = (
        BENCH_DIR / f"out-{name.split(':')[0].replace(' ', '-').replace(',', '')}.csv"
    )
    lines = textwrap.dedent(body).strip().splitlines()
    imports = "\n".join(line for line in lines if line.startswith(("import", "from")))
    work = "\n".join(line for line in lines if not line.startswith(("import", "from")))
    script = _HARNESS.format(imports=imports, body=work)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH", "")])),
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(source), str(output), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    out = process.stdout.read()
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{name} failed: {err.decode(errors='replace')[-2000:]}")
    seconds = json.loads(out.decode().strip().splitlines()[-1])["seconds"]
    # CPU time (user + system, start-up included) is steadier than wall time
    # on a shared machine; both are printed.
    cpu = usage.ru_utime + usage.ru_stime
    return Measure(name, seconds, usage.ru_maxrss / 1024, output, cpu)


def report(results: dict[str, Measure], *, enforce: bool) -> int:
    floor = results["floor: calamine + csv"].seconds
    print()
    floor_cpu = results["floor: calamine + csv"].cpu_seconds
    print(
        f"{'run':<24}{'seconds':>9}{'x floor':>9}{'CPU s':>8}{'x floor':>9}"
        f"{'RSS MB':>8}  target  output"
    )
    failed = False
    for name, result in results.items():
        ratio = result.seconds / floor
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            ok = ratio <= target and result.rss_mb < MAX_RSS_MB
            verdict = f"<{target}x {'ok' if ok else 'MISSED'}"
            failed |= enforce and not ok
            failed |= result.check not in ("ok", "exact")
        print(
            f"{name:<24}{result.seconds:>9.2f}{ratio:>9.2f}{result.cpu_seconds:>8.2f}"
            f"{result.cpu_seconds / floor_cpu:>9.2f}{result.rss_mb:>8.0f}"
            f"  {verdict:<9} {result.check}"
        )
    print(
        "\ntargets: no rules <= 2x floor, five rules <= 2.5x floor, "
        f"RSS < {MAX_RSS_MB} MB"
        + ("" if enforce else " (not enforced below 100,000 rows)")
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=1, help="best of N runs each")
    args = parser.parse_args(argv)
    return run(args.rows, args.runs)


if __name__ == "__main__":
    sys.exit(main())
