"""``python -m codesign`` is the ``codesign`` command."""

import sys

from codesign.cli import main

sys.exit(main())
