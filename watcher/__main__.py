"""``python -m watcher`` is ``batch-watcher``."""

import sys

from .cli.main import main

sys.exit(main())
