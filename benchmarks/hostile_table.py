"""Print the table of hostile and broken inputs that the test suite runs (tests/test_hostile_*.py), with the
exit code and message each must end with, and the count by class: README's "Bad input" section.

    .venv/bin/python benchmarks/hostile_table.py            # markdown table on stdout
    .venv/bin/python benchmarks/hostile_table.py --counts   # only the counts by class

The cases themselves are checked by `make test` (each one runs the real CLI); this script only lists them.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collect():
    sys.path.insert(0, str(ROOT))
    from tests.hostile import CLASSES

    cases = []
    for path in sorted((ROOT / "tests").glob("test_hostile_*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        cases += [(path.stem.removeprefix("test_hostile_"), c) for c in getattr(module, "CASES", [])]
    return CLASSES, cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", action="store_true")
    args = parser.parse_args()
    classes, cases = collect()
    counts = collections.Counter(c.cls for _, c in cases)
    if not args.counts:
        print("| class | case | exit | message (fragment) |")
        print("|---|---|---|---|")
        for cls in classes:
            for _, c in sorted((x for x in cases if x[1].cls == cls), key=lambda x: x[1].id):
                print(f"| {cls} | {c.what} | {c.exit_code} | {c.message.replace('|', '/')} |")
        print()
    print(f"{len(cases)} hostile cases, all run by `make test`: "
          + ", ".join(f"{cls} {counts[cls]}" for cls in classes if counts[cls]))


if __name__ == "__main__":
    main()
