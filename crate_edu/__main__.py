"""``python -m crate_edu``: the ``crate-edu`` command line (see :mod:`crate_edu.cli`)."""

import sys

from crate_edu.cli import main

if __name__ == "__main__":
    sys.exit(main())
