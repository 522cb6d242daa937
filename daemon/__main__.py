"""`python -m daemon` is the `cutout` command."""

import sys

from daemon.cli import main

sys.exit(main())
