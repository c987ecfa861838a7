"""Copy the tables of the committed benchmark / demo runs into README.md.

README numbers are never typed by hand: each block between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` is replaced by the table
in ``benchmarks/results/NAME.md`` (the file a benchmark run wrote), with the
command that produced it.

    python scripts/update_readme.py [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(
    r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S
)


def render(name: str) -> str:
    path = RESULTS / f"{name}.md"
    if not path.is_file():
        return f"_not run yet: `{name}` has no results in benchmarks/results/_\n"
    lines = path.read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith("# ")]  # drop the file's own title
    text = "\n".join(body).strip() + "\n"
    # images sit beside the results file: make their links relative to the README
    return re.sub(r"\]\((?!https?:|/)([^)]+\.png)\)", r"](benchmarks/results/\1)", text)


def update(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = update(old)
    if args.check:
        if new != old:
            print("README.md is out of date: run python scripts/update_readme.py")
            return 1
        return 0
    readme.write_text(new)
    print("README.md updated" if new != old else "README.md already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
