"""``python -m fiji_bridge.cli``: the ``semiblind`` command."""
import sys

from fiji_bridge.cli.semiblind import main

sys.exit(main())
