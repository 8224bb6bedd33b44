"""``python -m watcher`` is ``batch-watcher``."""

import sys

from .cli import main

sys.exit(main())
