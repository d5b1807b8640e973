"""``python -m backends.sim [serve] MODEL [options]``."""

import sys

from backends.sim import main

sys.exit(main())
