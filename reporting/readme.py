"""The README's headline from a report, in one command and without training: the block between
the README's headline markers is replaced by the report's `headline.md` (its table, what it shows,
its central figures), and the figures it shows are copied beside the README so that the page on
GitHub shows them.

    python -m reporting.readme --report reports/darkroom_study --readme README.md \
        --assets docs/headline

`scripts/headline.sh` builds the study's report from its committed records, then runs this.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

BEGIN = "<!-- headline: begin (scripts/headline.sh writes this block from the study's records) -->"
END = "<!-- headline: end -->"
FIGURE = re.compile(r"!\[([^\]]*)\]\((figures/[^)\s]+)\)")


class ReadmeError(RuntimeError):
    """What keeps the headline from being written, said in one line."""


def splice(readme: Path, report: Path, assets: Path) -> list[Path]:
    """Put `report`'s headline into `readme` between its markers, its figures copied into
    `assets` (linked relative to the README; a figure there that the headline no longer shows is
    removed); the figures copied. A README without its markers or a report without a headline
    (or without the figures it shows) is refused before anything is written; the README is
    replaced whole or not at all."""
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReadmeError(
            f"{readme}: needs one line '{BEGIN}' and, after it, one line '{END}' around the "
            "headline block"
        )
    source = report / "headline.md"
    if not source.is_file():
        raise ReadmeError(
            f"{report}: no headline.md (a report has one when it has complete AD runs with "
            "held-out plays); build it with zoo report first"
        )
    headline = source.read_text()
    figures = [report / path for _, path in FIGURE.findall(headline)]
    missing = [str(f) for f in figures if not f.is_file()]
    if missing:
        raise ReadmeError(f"{report}: headline.md shows figures that are not there: {missing}")
    link = Path(os.path.relpath(assets, readme.resolve().parent))
    headline = FIGURE.sub(lambda m: f"![{m[1]}]({(link / Path(m[2]).name).as_posix()})", headline)
    assets.mkdir(parents=True, exist_ok=True)
    copied = []
    for figure in figures:
        shutil.copyfile(figure, assets / figure.name)
        copied.append(assets / figure.name)
    for stale in set(assets.glob("*.png")) - set(copied):  # the folder is the headline's own
        stale.unlink()
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    updated = f"{before}{BEGIN}\n{headline.strip()}\n{END}{after}"
    partial = readme.with_name(f".{readme.name}.partial")
    try:
        partial.write_text(updated)
        partial.replace(readme)  # the README is whole before and after, never half written
    finally:
        partial.unlink(missing_ok=True)
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True, help="a zoo report folder")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--assets", type=Path, default=Path("docs/headline"),
                        help="where the headline's figures are copied")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        copied = splice(args.readme, args.report, args.assets)
    except (ReadmeError, OSError) as error:
        print(f"reporting.readme: {error}", file=sys.stderr)
        return 2
    print(f"reporting.readme: wrote the headline of {args.report} into {args.readme}", end="")
    print(f" ({len(copied)} figure(s) in {args.assets})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
