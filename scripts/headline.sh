#!/usr/bin/env bash
# The README's headline from the study's committed records, in seconds and without training:
# `zoo report` on results/darkroom/study (the grid and its ED), then its table, what it shows and its
# central figures into the README's headline block (figures copied to docs/headline/). Run it after
# committing new records; commit README.md and docs/headline/ with them.
#   scripts/headline.sh [RECORDS] [REPORT]
set -euo pipefail
cd "$(dirname "$0")/.."
ZOO=${ZOO:-.venv/bin/zoo}
PY=${PY:-.venv/bin/python}
records=${1:-results/darkroom/study}
report=${2:-reports/darkroom_study_committed}  # make run writes reports/darkroom_study
$ZOO report --records "$records" --out "$report" --title "The Dark Room study at convergence"
$PY -m reporting.readme --report "$report" --readme README.md --assets docs/headline
