"""``python -m backends.loadgen.workerproc``: one load-generator worker process (see :mod:`backends.loadgen.worker`).

A module of its own so that ``-m`` does not run :mod:`backends.loadgen.worker`
a second time (the package imports it).
"""

import sys

from backends.loadgen.worker import main

if __name__ == "__main__":
    sys.exit(main())
