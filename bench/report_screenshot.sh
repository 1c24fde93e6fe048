#!/usr/bin/env bash
# A report page as a browser draws it at a laptop's width, to check its figures by eye.
# Usage: bench/report_screenshot.sh REPORT_DIR [OUT.png] [WIDTH]   (default: report-1280.png, 1280)
# Needs chromium (`make test` installs it). Shot 12000 px tall, trimmed to the page's content
# (the trial table of a full grid runs longer: the figures all come before it).
set -euo pipefail
report=$(cd "$1" && pwd)
out=${2:-report-1280.png}
width=${3:-1280}
browser=$(command -v chromium || command -v chromium-browser)
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
shot() {  # height, output
  "$browser" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
    --window-size="$width,$1" --virtual-time-budget=5000 --screenshot="$2" \
    "file://$report/index.html" > /dev/null 2>&1
}
# the page's height: a first tall shot, trimmed of the blank rows below the content
shot 12000 "$out"
.venv/bin/python - "$out" <<'PY'
import sys
import numpy as np
from PIL import Image
path = sys.argv[1]
image = Image.open(path)
rows = np.flatnonzero(np.asarray(image.convert("L")).min(axis=1) < 250)
height = min(image.height, int(rows.max()) + 40)
image.crop((0, 0, image.width, height)).save(path)
print(f"{path}: {image.width} x {height} px")
PY
