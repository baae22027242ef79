"""``python -m simplex_decode.cli``."""

import sys

from .main import main

sys.exit(main())
