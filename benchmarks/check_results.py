"""Checks that every published number traces to a results file made by today's code.

Reads the committed files only (re-runs nothing) and fails when
  (a) a result cell of a table in README.md or docs/ (any .md) holds a number that no key of a
      results file gives, names a key that does not exist, or claims "A beats B" without the
      comparison's statement from a results file;
  (b) a results file (benchmarks/results/*.json) lacks its provenance, or its run did not
      finish, or was made from uncommitted changes to the code it depends on;
  (c) the code a results file depends on changed between the commit it records and HEAD
      (the paths it recorded, plus those its benchmark scripts import today).
benchmarks/results/stale/ holds results awaiting a re-run: it is not checked and docs may not
cite it.

How a table row names its source: a table with a "result" column has a "source" column;
each source cell lists `FILE: KEY, KEY, ...` groups separated by ";". FILE is a results
file in benchmarks/results/; KEY is a path into its JSON with "/" between keys, and may use
shell wildcards (`summary/*/watch/mean`). Every number in the result cell must equal one of
the keys' numbers as rounded in the cell (the value or the value x 100, for percentages);
a key that holds text (a comparison's statement) must appear verbatim in the result cell.
`mean(KEY)` and `std(KEY)` stand for the mean and the sample standard deviation (ddof 1) of
the numbers a wildcard KEY matches (per-seed values a results file keeps but does not average:
`mean(results/ro/*/methods/adapter/cer)`). Example row:

    | AdaFed, watch, 3 seeds | FedAP 87.51 ± 1.45 | `adafed_benchmark.json: summary/fedap/watch/mean, summary/fedap/watch/std` | ... |

Usage:
  python benchmarks/check_results.py          # exit 0 when everything traces, else 1 and the problems
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import provenance  # noqa: E402
import stats  # noqa: E402

RESULTS = os.path.join("benchmarks", "results")
STALE = "stale"
DOCS = ("README.md", os.path.join("docs", "**", "*.md"))
# Records of the test suite's duration measure the whole tree at one commit: they need
# provenance, but do not go stale with the code.
LOGS = ("test_durations.json",)
# A number as written in a cell: 87.51, −1.4, 19,081, 1.2e-7, 3.8x (not the 5 of mnist5k
# or the 28 of WRN-28-2).
NUMBER = re.compile(r"(?<![\w.\-−])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:e([-+]?\d+))?")
AGGREGATE = re.compile(r"(mean|std)\((.+)\)")
CLAIM = re.compile(r"\b(beats?|outperforms?)\b", re.IGNORECASE)


def flatten(value, prefix=""):
    """{"a/b/0": leaf, ...} for a JSON value."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [cell.strip() for cell in cells[1:-1]]


def tables(text: str):
    """(header's line number, row's line number, header cells, row cells) of every markdown
    table row in `text`."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|\s*$",
                                                                                 lines[i + 1]):
            header, start = [cell.lower() for cell in split_row(lines[i])], i + 1
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                yield start, i + 1, header, split_row(lines[i])
                i += 1
        else:
            i += 1


def parse_source(cell: str) -> list[tuple[str, list[str]]]:
    """`FILE: KEY, KEY; FILE: KEY` -> [(FILE, [KEY, ...]), ...] (backticks ignored)."""
    groups = []
    for part in cell.replace("`", "").split(";"):
        if part.strip() in ("", "—", "-"):
            continue
        name, _, keys = part.partition(":")
        groups.append((name.strip(), [key.strip() for key in keys.split(",") if key.strip()]))
    return groups


def numbers(cell: str) -> list[tuple[str, float, float]]:
    """(text, value, rounding tolerance) of every number written in `cell`: 87.51 stands for
    anything in [87.505, 87.515]."""
    found = []
    for match in NUMBER.finditer(cell):
        text = match.group(0)
        decimals, exponent = len(match.group(1) or ""), int(match.group(2) or 0)
        found.append((text, float(text.replace(",", "").replace("−", "-")), 0.5 * 10.0 ** (exponent - decimals)))
    return found


def shows(value: float, number: float, tolerance: float) -> bool:
    """Whether `number` is `value` (or `value` x 100, a percentage) rounded as written; the
    sign may be dropped (a cell says "+4.1 %" or "4.1 % worse")."""
    return any(abs(abs(scale * value) - abs(number)) <= tolerance * (1 + 1e-9) for scale in (1.0, 100.0))


class Checker:
    def __init__(self):
        self.root = provenance.ROOT
        self.problems: list[str] = []
        self._files: dict[str, dict | None] = {}

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{where}: {text}")

    # ------------------------------------------------------------ results files

    def results_files(self) -> list[str]:
        folder = os.path.join(self.root, RESULTS)
        return sorted(os.path.relpath(path, folder) for path in glob.glob(os.path.join(folder, "**", "*.json"),
                                                                          recursive=True)
                      if not os.path.relpath(path, folder).startswith(STALE + os.sep))

    def load(self, name: str) -> dict | None:
        if name not in self._files:
            path = os.path.join(self.root, RESULTS, name)
            try:
                with open(path) as f:
                    self._files[name] = json.load(f)
            except (OSError, json.JSONDecodeError) as err:
                self._files[name] = None
                self.problem(os.path.join(RESULTS, name), f"cannot be read ({err})")
        return self._files[name]

    def check_file(self, name: str) -> None:
        where = os.path.join(RESULTS, name)
        content = self.load(name)
        if content is None:
            return
        record = content.get("provenance") if isinstance(content, dict) else None
        if not isinstance(record, dict) or not record.get("commit"):
            self.problem(where, "no provenance (re-run its benchmark, or move it to benchmarks/results/stale/)")
            return
        if record.get("wall_seconds") is None:
            self.problem(where, "its run did not finish (the provenance has no wall time)")
        if record.get("dirty_dependencies"):
            self.problem(where, "made from uncommitted changes to " + ", ".join(record["dirty_dependencies"]))
        if os.path.basename(name) in LOGS:
            return
        recorded = record.get("dependencies") or []
        if not recorded:
            self.problem(where, "its provenance names no dependencies")
            return
        scripts = [p for p in recorded if p.startswith("benchmarks/") and os.path.isfile(os.path.join(self.root, p))]
        today = {path for script in scripts for path in provenance.dependency_paths(script)}
        changed = provenance.changed_since(record["commit"], sorted(set(recorded) | today), until="HEAD")
        if changed:
            self.problem(where, f"the code it depends on changed since {record['commit'][:10]}: "
                         + ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
                         + f"; re-run `{record.get('command', 'its benchmark')}`")

    # ------------------------------------------------------------ documents

    def check_document(self, path: str) -> int:
        with open(os.path.join(self.root, path), encoding="utf-8") as f:
            text = f.read()
        rows, unsourced = 0, set()
        for start, line, header, cells in tables(text):
            if "result" not in header:
                continue
            where = f"{path}:{line}"
            if "source" not in header:
                if start not in unsourced:
                    self.problem(f"{path}:{start}", "a table with a result column needs a source column")
                unsourced.add(start)
                continue
            if len(cells) != len(header):
                self.problem(where, f"{len(cells)} cells, the header has {len(header)}")
                continue
            rows += 1
            self.check_row(where, cells[header.index("result")], cells[header.index("source")])
        return rows

    def check_row(self, where: str, result: str, source: str) -> None:
        values, texts = [], []
        for name, patterns in parse_source(source):
            if name.startswith(STALE + "/") or name.startswith(STALE + os.sep):
                self.problem(where, f"cites {name}, a result awaiting a re-run")
                continue
            if not os.path.isfile(os.path.join(self.root, RESULTS, name)):
                self.problem(where, f"cites {name}, which is not in {RESULTS}/")
                continue
            content = self.load(name)
            if content is None:
                continue
            flat = flatten(content)
            if not patterns:
                self.problem(where, f"names no key of {name}")
            for pattern in patterns:
                aggregate = AGGREGATE.fullmatch(pattern)
                reduce, inner = aggregate.groups() if aggregate else (None, pattern)
                matched = [flat[key] for key in fnmatch.filter(flat, inner)]
                if not matched:
                    self.problem(where, f"{name} has no key {inner}")
                if reduce:
                    matched = self.aggregate(where, reduce, inner, matched)
                values += [v for v in matched if isinstance(v, (int, float)) and not isinstance(v, bool)]
                texts += [v for v in matched if isinstance(v, str)]
        for text in texts:
            if text not in result:
                self.problem(where, f"the result cell does not say what the file says: {text!r}")
        remainder = result
        for text in texts:
            remainder = remainder.replace(text, "")
        for written, number, tolerance in numbers(remainder):  # a statement's numbers are the file's
            if not any(shows(v, number, tolerance) for v in values):
                self.problem(where, f"{written} has no results-file key behind it"
                             + ("" if values else " (the source names none)"))
        if CLAIM.search(remainder):
            self.problem(where, "a claim that one method beats another needs its comparison statement from a "
                                "results file")

    def aggregate(self, where: str, reduce: str, pattern: str, matched: list) -> list[float]:
        """[mean] or [sample std] of the numbers `pattern` matched, for a `mean(...)` / `std(...)` key."""
        values = [v for v in matched if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(values) != len(matched) or len(values) < (2 if reduce == "std" else 1):
            if matched:
                self.problem(where, f"{reduce}({pattern}) needs {'two or more' if reduce == 'std' else 'only'} "
                                    f"numbers, it matches {len(values)} numbers of {len(matched)} values")
            return []
        return [stats.spread(values)[reduce]]

    def run(self) -> tuple[int, int]:
        files = self.results_files()
        for name in files:
            self.check_file(name)
        documents = sorted({os.path.relpath(p, self.root) for pattern in DOCS
                            for p in glob.glob(os.path.join(self.root, pattern), recursive=True)})
        rows = sum(self.check_document(path) for path in documents)
        return len(files), rows


def check() -> list[str]:
    """The problems found in this repository (`provenance.ROOT`); [] when there are none."""
    checker = Checker()
    checker.run()
    return checker.problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    checker = Checker()
    files, rows = checker.run()
    for line in checker.problems:
        print(line)
    if checker.problems:
        print(f"{len(checker.problems)} problems ({files} results files, {rows} result rows checked)")
        return 1
    print(f"ok: {files} results files with provenance and today's code, {rows} result rows traced to them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
