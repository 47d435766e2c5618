"""``python -m spanprobe_tracer.cli``: the `spanprobe` command without its console script."""

import sys

from .main import main

sys.exit(main())
