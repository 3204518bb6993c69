"""``python -m scheduler.cli``: the ``replay`` command."""

import sys

from scheduler.cli import main

sys.exit(main())
