"""Unit tests of the Python guest SDK; they need only the stdlib.

Run from the repository root:

    python3 -m unittest discover -s guest-sdk/python/tests -t guest-sdk/python

The package is imported from `src/` (added to the path here), so nothing
needs installing, and componentize-py is not needed.
"""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parent.parent / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
