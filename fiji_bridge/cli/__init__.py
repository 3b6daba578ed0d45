"""Command-line front-ends: ``semiblind`` (`semiblind`), its ``batch`` (`batch`) and ``imagej``/``fiji``
(`imagej`) sub-commands."""
from fiji_bridge.cli.semiblind import main

__all__ = ["main"]
