"""`python -m cxr_core`: the command line (cxr_core/cli)."""

import sys

from .cli import main  # tests and scripts call main([...])

if __name__ == "__main__":
    sys.exit(main())
