"""`python -m cofferdam_guest build tool.py -o tool.wasm`: the same as `cofferdam-py`."""

import sys

from .build import main

sys.exit(main())
