"""The documents' tables, regenerated from the committed JSON in ``benchmarks/results/``.

Each table in ``docs/performance.md`` and ``docs/results.md`` sits between two marker comments
naming how to draw it and the JSON it comes from::

    <!-- table: compute_in_process (benchmarks/results/compute-xeon-amx.json) -->
    | variant | images/s | ... |
    <!-- /table -->

``python -m benchmarks.report`` rewrites every such table from its JSON (the figures a benchmark
script wrote, or, for runs whose JSON was lost, the figures the document printed, transcribed with
a ``provenance`` note); ``--check`` changes nothing and exits 1 when a committed table differs
from what its JSON gives, so a hand-edited figure is caught. Derived figures (ratios, medians,
means, targets) are computed here, not copied.

    python -m benchmarks.report [--check] [DOC ...]
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import tables_search, tables_training  # noqa: F401 - register the tables of sections 1-2, 5
from benchmarks.tables import RENDERERS

ROOT = Path(__file__).resolve().parents[1]  # JSON paths in markers are relative to the repository
DOCS = (ROOT / "docs" / "performance.md", ROOT / "docs" / "results.md")
MARKER = re.compile(r"(<!-- table: ([\w-]+) \(([^)]*)\) -->\n)(.*?)(<!-- /table -->)", re.DOTALL)

# The documents ---------------------------------------------------------------------------------


def render(text: str, where: str = "document") -> str:
    """``text`` with every marked table redrawn from its JSON."""

    def redraw(m: re.Match[str]) -> str:
        head, name, sources, _, tail = m.groups()
        if name not in RENDERERS:
            raise SystemExit(f"{where}: unknown table {name!r}; known: {', '.join(sorted(RENDERERS))}")
        files = []
        for source in (s.strip() for s in sources.split(",")):
            path = ROOT / source
            if not path.is_file():
                raise SystemExit(f"{where}: table {name!r} names {source}, which does not exist")
            files.append(json.loads(path.read_text()))
        return f"{head}{RENDERERS[name](files)}\n{tail}"

    if text.count("<!-- table: ") != len(MARKER.findall(text)):
        raise SystemExit(f"{where}: a '<!-- table: NAME (FILE.json) -->' marker has no '<!-- /table -->' after it")
    return MARKER.sub(redraw, text)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("docs", nargs="*", type=Path, default=list(DOCS), help="Markdown files (default: the two docs)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its JSON")
    args = p.parse_args(argv)
    stale = 0
    for doc in args.docs:
        text = doc.read_text()
        new = render(text, str(doc))
        tables = len(MARKER.findall(text))
        if new == text:
            print(f"{doc}: {tables} tables match their JSON")
            continue
        if args.check:
            stale += 1
            diff = difflib.unified_diff(text.splitlines(), new.splitlines(), f"{doc} (committed)", "from JSON")
            print("\n".join(line.rstrip("\n") for line in diff))
        else:
            doc.write_text(new)
            print(f"{doc}: {tables} tables rewritten from their JSON")
    if stale:
        print(f"{stale} document(s) differ from benchmarks/results/: run python -m benchmarks.report", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
