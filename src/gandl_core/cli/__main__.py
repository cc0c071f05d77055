"""python -m gandl_core.cli == gandl-core (used by torchrun)."""

import sys

from . import main

sys.exit(main())
