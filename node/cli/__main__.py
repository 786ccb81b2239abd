"""So `python -m node.cli` runs the `liaison` command (the tests and the local federation
start nodes that way)."""

import sys

from node.cli import main

sys.exit(main())
