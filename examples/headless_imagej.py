"""Headless SemiBlind inside ImageJ 1 from Python (scyjava/JPype; no Fiji needed).

Opens each TIFF with ImageJ, runs the Semi-Blind Deconvolution command on the ImagePlus, saves the restored
image, the parameter map stack and the depth map as ImageJ TIFFs, and prints a JSON summary (last line).
The same command is available to ImageJ macros in this JVM:
``IJ.runMacro('open("/data/cells.tif"); run("Semi-Blind Deconvolution", "iterations=30 tv=0.002");')``.

Usage::

    python examples/headless_imagej.py cells.tif [more.tif ...] -o results/ [--iterations 30] [--tv 0.002]

Needs ImageJ 1 (Debian: libij-java, or SEMIBLIND_IJ_JAR=/path/to/ij.jar) and a JDK (javac, for the shim).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fiji_bridge.imagej import command as fiji_command
from fiji_bridge import imagej as ijconv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--tv", type=float, default=0.002)
    args = ap.parse_args(argv)

    fiji_command.install()                       # headless JVM + ImageJ 1 + the command
    IJ = ijconv.jclass("ij.IJ")
    args.output.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    for path in args.images:
        imp = IJ.openImage(str(path.resolve()))
        if imp is None:
            print(f"headless_imagej: ImageJ cannot open {path}", file=sys.stderr)
            return 2
        result = fiji_command.run_command(imp, {"iterations": args.iterations, "tv": args.tv},
                                          progress=lambda f, m: print(f"{f:5.0%} {m}", file=sys.stderr))
        for key, out in (("restored", result.restored), ("psfmap", result.parameter_map),
                         ("depth", result.depth_map)):
            target = args.output / f"{out.getTitle()}.tif"
            IJ.saveAsTiff(out, str(target))
            summary[key] = {"path": str(target), "shape": list(ijconv.imageplus_to_numpy(out).shape),
                            "pixel_size_um": ijconv.pixel_size_um(out)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
