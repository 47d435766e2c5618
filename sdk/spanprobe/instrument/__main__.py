"""``python -m spanprobe.instrument``: see spanprobe.instrument.command."""

import sys

from .command import main

sys.exit(main())
