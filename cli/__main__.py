"""`python -m cli ...`: the `zoo` command (sweep workers start their siblings this way)."""

import sys

from cli import main

sys.exit(main())
