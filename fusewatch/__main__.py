"""``python -m fusewatch``: the ``fusewatch`` command."""

import sys

from fusewatch.cli import main

if __name__ == "__main__":
    sys.exit(main())
