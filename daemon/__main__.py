"""`python -m daemon` is the `cutout` command."""

import sys

from daemon.cli.main import main

sys.exit(main())
