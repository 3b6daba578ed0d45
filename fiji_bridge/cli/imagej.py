"""``semiblind fiji install FIJI_DIR`` and ``semiblind imagej``: the Fiji / ImageJ front-ends of the CLI.

`register` adds both sub-commands to the ``semiblind`` sub-parsers; each handler takes the argparse
Namespace and returns an exit code (0 success, 2 bad input). Nothing here starts a JVM at import time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from fiji_bridge.io.atomic import atomic_path
from fiji_bridge.imagej import PLUGINS_DIR

#: Fiji script command, relative to PLUGINS_DIR and to Fiji.app (same layout).
SCRIPT = Path("scripts/Plugins/Deconvolution/Semi-Blind_Deconvolution.py")
#: Every Fiji script command installed: the deconvolution and the quick "Estimate PSF Map" preview.
SCRIPTS = (SCRIPT, SCRIPT.with_name("Estimate_PSF_Map.py"))
#: Batch macro, relative to PLUGINS_DIR; installed into Fiji.app/macros/.
MACRO = Path("macros/semiblind_batch.ijm")

SETUP_TEXT = """\
One-time setup of Python in Fiji (the command runs in CPython, not in Fiji's default Jython):
  1. Create a Python environment with SemiBlind and its extra semiblind[imagej] (not on PyPI: from a
     source checkout, python -m pip install '/path/to/SemiBlind[imagej]', or from a wheel,
     python -m pip install 'semiblind-0.1.0-py3-none-any.whl[imagej]')  (this one: {python})
  2. Either enable Fiji's Python mode and point it at that environment (Fiji >= 2.15:
     Edit > Options > Python..., then restart Fiji), or start Fiji from that environment with PyImageJ:
       python -c "import imagej; ij = imagej.init('{fiji}', mode='interactive'); ij.ui().showUI()"
     (see examples/pyimagej_fiji.py).
  3. Restart Fiji: Plugins > Deconvolution > Semi-Blind Deconvolution is then available and recordable;
     batch processing: Plugins > Macros > Run... {macro}
"""


# ------------------------------------------------------------------------------------- fiji install


def check_fiji_dir(path: str | Path) -> Path:
    """The Fiji.app folder ``path``, checked: a folder with ``jars/ij-*.jar`` and ``plugins/``.

    Raises
    ------
    ValueError
        One line naming what is missing.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"FIJI_DIR: not a folder: {root}")
    jars = root / "jars"
    if not jars.is_dir() or not (any(jars.glob("ij-*.jar")) or (jars / "ij.jar").is_file()):
        raise ValueError(f"FIJI_DIR: {root} is not a Fiji.app folder (no jars/ij-*.jar)")
    if not (root / "plugins").is_dir():
        raise ValueError(f"FIJI_DIR: {root} is not a Fiji.app folder (no plugins/ folder)")
    return root


def install_into_fiji(fiji_dir: str | Path) -> list[Path]:
    """Copy the script commands and the batch macro into a Fiji.app; returns the installed files.

    The scripts go to ``Fiji.app/scripts/Plugins/Deconvolution/`` (menu Plugins > Deconvolution > Semi-Blind
    Deconvolution and Estimate PSF Map), the macro to ``Fiji.app/macros/``. No jar is needed inside Fiji: the
    script commands are the menu entries there.
    """
    root = check_fiji_dir(fiji_dir)
    copies = [*((PLUGINS_DIR / s, root / s) for s in SCRIPTS), (PLUGINS_DIR / MACRO, root / "macros" / MACRO.name)]
    for src, _ in copies:
        if not src.is_file():
            raise ValueError(f"plugin file missing from this installation: {src}")
    installed = []
    for src, dst in copies:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        installed.append(dst)
    return installed


def cmd_fiji_install(args: argparse.Namespace) -> int:
    """``semiblind fiji install FIJI_DIR``."""
    try:
        installed = install_into_fiji(args.fiji_dir)
    except (ValueError, OSError) as exc:
        print(f"semiblind fiji install: error: {exc}", file=sys.stderr)
        return 2
    root = Path(args.fiji_dir).expanduser()
    for path in installed:
        print(f"installed {path}")
    if not args.quiet:
        print()
        print(SETUP_TEXT.format(python=sys.executable, fiji=root.resolve(),
                                macro=root / "macros" / MACRO.name))
    return 0


# -------------------------------------------------------------------------------------------- imagej


def launch_imagej(images: list[str] | tuple[str, ...] = (), *, fiji_dir: str | None = None):
    """Open the ImageJ 1 window (embedded mode) with Semi-Blind Deconvolution in Plugins > Deconvolution.

    Starts a non-headless JVM when none runs yet. Returns the ``ij.ImageJ`` instance.

    Raises
    ------
    RuntimeError
        When no display is available or the JVM already runs headless.
    """
    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge import imagej as ijconv
    for image in images:
        if not Path(image).is_file():
            raise ValueError(f"image file not found: {image}")
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not ijconv.jvm_started():
        raise RuntimeError("no display: ImageJ's window needs X11 (set DISPLAY, e.g. run under xvfb-run)")
    if not ijconv.jvm_started():
        ijconv.start_jvm(headless=False, fiji_dir=fiji_dir)
    GraphicsEnvironment = ijconv.jclass("java.awt.GraphicsEnvironment")
    if GraphicsEnvironment.isHeadless():
        raise RuntimeError("no display: ImageJ's window needs X11 (set DISPLAY, e.g. run under xvfb-run)")
    ImageJ = ijconv.jclass("ij.ImageJ")
    IJ = ijconv.jclass("ij.IJ")
    ij = IJ.getInstance() or ImageJ(ImageJ.EMBEDDED)
    if not fiji_command.install():
        raise RuntimeError("ImageJ started but its Plugins menu was not found")
    for image in images:
        imp = IJ.openImage(str(Path(image).resolve()))
        if imp is None:
            raise ValueError(f"ImageJ cannot open {image}")
        imp.show()
    return ij


def wait_until_closed(ij, poll: float = 0.25) -> None:
    """Block until the ImageJ window is closed (File > Quit)."""
    from fiji_bridge import imagej as ijconv
    IJ = ijconv.jclass("ij.IJ")
    while IJ.getInstance() is not None and ij.isShowing():
        time.sleep(poll)


def cmd_imagej(args: argparse.Namespace) -> int:
    """``semiblind imagej [IMAGE ...] [--macro FILE]``: ImageJ window with the command; returns when closed."""
    try:
        fiji_dir = str(check_fiji_dir(args.fiji)) if args.fiji else None
        ij = launch_imagej(args.images, fiji_dir=fiji_dir)
        if args.macro:
            from fiji_bridge import imagej as ijconv
            macro = Path(args.macro)
            if not macro.is_file():
                raise ValueError(f"--macro: file not found: {macro}")
            ijconv.jclass("ij.IJ").runMacroFile(str(macro.resolve()), args.macro_arg or "")
        print("ImageJ is running: Plugins > Deconvolution > Semi-Blind Deconvolution (close ImageJ to exit)",
              file=sys.stderr)
        wait_until_closed(ij)
    except (ValueError, RuntimeError) as exc:
        print(f"semiblind imagej: error: {exc}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------------------ register


def register(subparsers) -> None:
    """Add ``fiji install`` and ``imagej`` to the ``semiblind`` sub-parsers."""
    fiji = subparsers.add_parser("fiji", help="Fiji integration (install the menu command)",
                                 description="Fiji integration of SemiBlind.")
    fiji_sub = fiji.add_subparsers(dest="fiji_command", metavar="ACTION", required=True)
    inst = fiji_sub.add_parser(
        "install", help="copy the Semi-Blind Deconvolution command and batch macro into a Fiji.app",
        description="Copy the script command (Plugins > Deconvolution > Semi-Blind Deconvolution) into "
                    "FIJI_DIR/scripts/Plugins/Deconvolution/ and the batch macro into FIJI_DIR/macros/, then "
                    "print the one-time Python setup Fiji needs.")
    inst.add_argument("fiji_dir", metavar="FIJI_DIR", help="the Fiji.app folder")
    inst.add_argument("--quiet", action="store_true", help="do not print the setup instructions")
    inst.set_defaults(func=cmd_fiji_install)

    ij = subparsers.add_parser(
        "imagej", help="open ImageJ with Semi-Blind Deconvolution in its Plugins menu",
        description="Start ImageJ 1 (window) from this Python with Plugins > Deconvolution > Semi-Blind "
                    "Deconvolution registered; macros can call run(\"Semi-Blind Deconvolution\", ...). "
                    "Returns when ImageJ is closed.")
    ij.add_argument("images", nargs="*", metavar="IMAGE", help="images to open")
    ij.add_argument("--macro", default=None, help="IJM macro file to run after start-up")
    ij.add_argument("--macro-arg", default=None, help="argument string for the macro (getArgument())")
    ij.add_argument("--fiji", default=None, metavar="FIJI_DIR",
                    help="use the jars of this Fiji.app instead of ImageJ 1 (ij.jar)")
    ij.set_defaults(func=cmd_imagej)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m fiji_bridge.cli.imagej``) with the same sub-commands."""
    parser = argparse.ArgumentParser(prog="semiblind")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
