"""SemiBlind with PyImageJ and a local Fiji (ImageJ2): headless or with Fiji's window.

Not run by the tests (it needs a Fiji.app and PyImageJ: ``pip install pyimagej '/path/to/SemiBlind[imagej]'``
from a source checkout; SemiBlind is not on PyPI).

    python examples/pyimagej_fiji.py /path/to/Fiji.app cells.tif -o results/ [--gui]

What it shows:
1. ``imagej.init(FIJI_DIR)`` with the SemiBlind Java shim on the class path, so that ImageJ macros in this
   JVM can ``run("Semi-Blind Deconvolution", ...)`` (same command as ``semiblind imagej``);
2. Python calls on ImageJ2 Datasets through PyImageJ's converters (`fiji_command.run_imagej2`);
3. a macro call, recorded-macro style.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fiji_dir", type=Path, help="Fiji.app folder")
    ap.add_argument("image", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--gui", action="store_true", help="show Fiji's window (interactive mode)")
    args = ap.parse_args(argv)

    import imagej
    import scyjava

    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge import imagej as ijconv

    # the shim must be on the class path before the JVM starts; never let scyjava download a JDK
    scyjava.config.set_java_constraints(fetch="never")
    scyjava.config.add_classpath(str(ijconv.build_shim(ijconv.find_ij_jar(args.fiji_dir))))
    ij = imagej.init(str(args.fiji_dir), mode="interactive" if args.gui else "headless")
    fiji_command.install()               # JVM already running: installs the handler, registers the command
    args.output.mkdir(parents=True, exist_ok=True)

    # (2) ImageJ2 Dataset in, Datasets out, through PyImageJ's converters
    dataset = ij.io().open(str(args.image.resolve()))
    results = fiji_command.run_imagej2(dataset, ij, iterations=args.iterations)
    for key, ds in results.items():
        ij.io().save(ds, str(args.output / f"{args.image.stem}_{key}.tif"))
    print("ImageJ2 results:", {k: [int(d) for d in v.dimensionsAsLongArray()] for k, v in results.items()})

    # (3) the same command from an ImageJ macro (as the macro recorder writes it)
    src = str(args.image.resolve()).replace("\\", "/")
    ij.py.run_macro(f'open("{src}"); run("Semi-Blind Deconvolution", "iterations={args.iterations} tv=0.002");')
    if fiji_command.last_error():
        print("macro failed:", fiji_command.last_error(), file=sys.stderr)
        return 1
    if args.gui:
        ij.ui().showUI()
        input("Fiji is open (Plugins > Deconvolution > Semi-Blind Deconvolution); press Enter to quit ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
