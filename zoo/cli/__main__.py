"""`python -m zoo.cli ...`: the `zoo` command (sweep workers start their siblings this way)."""

import sys

from zoo.cli import main

sys.exit(main())
