"""`python -m lbcore`: the same command line as the `lbcore` script, for
hosts where the script is not on PATH (a venv not activated, a container
image that only ships the package)."""

import sys

from .cli import main

sys.exit(main())
