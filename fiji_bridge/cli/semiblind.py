"""``semiblind`` command line: psf, psf-map, deconvolve, simulate (+ fiji/imagej and batch when installed)."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from pathlib import Path


from fiji_bridge import __version__
from fiji_bridge.settings import DECONVOLVE_OPTIONS, MAP_OPTIONS, OPTICS_FIELDS, add_arguments, from_args


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (``semiblind deconvolve: error: ...``), exit status 2, like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _parse_zernike(text: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for item in filter(None, text.split(",")):
        try:
            key, value = item.split("=")
            out[int(key)] = out.get(int(key), 0.0) + float(value)
        except ValueError:
            raise ValueError(f"--zernike: expected NOLL=WAVES[,NOLL=WAVES...], got {item!r}") from None
    return out


def cmd_psf(args) -> int:
    from fiji_bridge.optics.parameters import Optics
    from fiji_bridge.optics.psf import zernike_psf
    from fiji_bridge.io.tiff import write_imagej_tiff
    optics = Optics(na=args.na, wavelength=args.wavelength, pixel_size=args.pixel_size,
                    n=1.0 if args.n is None else args.n)
    coeffs = _parse_zernike(args.zernike or "")
    for noll, value in ((4, args.defocus), (6, args.astig_0), (5, args.astig_45)):
        if value:
            coeffs[noll] = coeffs.get(noll, 0.0) + value
    psf = zernike_psf(optics, coeffs, size=args.size)
    write_imagej_tiff(args.output, psf, optics.pixel_size,
                      info={"optics": optics.to_dict(), "zernike_waves_rms": {str(k): v for k, v in coeffs.items()},
                            "size": args.size, "normalisation": "sum = 1"})
    _say(args, f"wrote {args.output}")
    return 0


class _ProgressBar:
    """tqdm bar drawn on the first update, so inputs that fail validation print only their error."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __call__(self, fraction: float, message: str) -> None:
        _release_warnings()                # the work has started: warnings so far were about it
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=100, unit="%", leave=False, file=sys.stderr)
        self.bar.n = round(100 * fraction)
        self.bar.set_description(message[:40], refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _optics_kwargs(args) -> dict:
    return from_args(args).optics()


def _note_calibration(args, done: dict) -> None:
    if not done["calibrated"] and not args.pixel_size:
        _say(args, f"note: {Path(args.input).name} has no pixel calibration; assumed the model's "
                   f"{done['optics']['pixel_size']} µm (use --pixel-size)")


def cmd_psf_map(args) -> int:
    from fiji_bridge.estimation.model import PSFModel
    from fiji_bridge.pipeline import check_outputs, file_optics, open_image, write_psf_map
    from fiji_bridge.estimation.psf_map import estimate_psf_map
    check_outputs(args.input, output=args.output)          # not the input (nor a link to it), not a folder
    settings = from_args(args)
    from fiji_bridge.pipeline import _is_stack_run
    if _is_stack_run(Path(args.input), settings):        # stacks, OME-TIFF, presets: every plane's map
        from fiji_bridge.stacks import map_stack_file
        done = map_stack_file(args.input, args.output, **{k: v for k, v in settings.keywords().items()
                                                          if k in ("stride", "model", "device", "na", "wavelength",
                                                                   "pixel_size", "n", "objective")})
        _say(args, f"PSF maps of {done['planes']} planes ({done['axes']}): {done['grid'][0]}x{done['grid'][1]} "
                   f"patches each on {done['provider']}")
        _say(args, f"wrote {args.output}")
        return 0
    img, _ = open_image(args.input)                    # large files are read band by band
    model = PSFModel(args.model, device=args.device)
    optics = file_optics(img, model.config.default_image_optics, **_optics_kwargs(args))
    psf_map = estimate_psf_map(img.data, model=model, stride=args.stride, optics=optics, device=args.device)
    _say(args, f"PSF map: {psf_map.parameters.shape[1]}x{psf_map.parameters.shape[2]} patches on {psf_map.provider}")
    write_psf_map(args.output, psf_map, args.input)
    _say(args, f"wrote {args.output}")
    return 0


def _pyramid_levels(text: str) -> int:
    """argparse type of ``--pyramid``: 1 to `fiji_bridge.io.omezarr.MAX_LEVELS` resolution levels."""
    from fiji_bridge.io.omezarr import MAX_LEVELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LEVELS:
        raise argparse.ArgumentTypeError(f"expected a whole number of levels from 1 to {MAX_LEVELS}, got {text!r}")
    return value


def add_pyramid_argument(parser: argparse.ArgumentParser) -> None:
    """``--pyramid LEVELS`` (OME-Zarr outputs; `deconvolve` and `batch`)."""
    parser.add_argument("--pyramid", type=_pyramid_levels, default=1, metavar="LEVELS",
                        help="resolution levels of an OME-Zarr output (.zarr), each binned 2x2 from the one before "
                             "(default: 1, the full resolution only; TIFF outputs have one level)")


def cmd_deconvolve(args) -> int:
    from fiji_bridge.pipeline import process_file
    bar = _ProgressBar(args.quiet)
    try:
        done = process_file(args.input, args.output, map_path=args.map, report_path=args.report, progress=bar,
                            pyramid=args.pyramid, **from_args(args).keywords())
    finally:
        bar.close()
    _note_calibration(args, done)
    st = done["settings"]
    chosen = f" (chosen for ~{st['estimated_photons']:.0f} photons)" if st.get("auto") else ""
    if "axes" in done:                     # a stack (or OME-TIFF / preset / saved map): plane by plane
        maps = done["maps"]
        flick = maps.get("flicker_waves")
        modes = [f"{axis} {maps[key]}" for axis, key, letter in (("channels", "channels", "C"),
                                                                  ("frames", "frames", "T")) if letter in done["axes"]]
        if flick:
            modes.append(f"flicker {flick['per_frame_maps']:.3f} -> {flick['used']:.3f} waves")
        fmt = {"ome": "OME-TIFF", "zarr": "OME-Zarr"}.get(done["format"], "ImageJ TIFF")
        where = f" in {len(done['positions'])} positions" if done.get("positions") else ""
        _say(args, f"{done['planes']} plane(s){where}, axes {done['axes']}, written as {fmt}; optics NA "
                   f"{done['optics']['na']:g}, n {done['optics']['n']:g}, λ "
                   f"{', '.join(f'{w:g}' for w in done['wavelengths'])} µm (NA from {done['optics_sources']['na']})"
                   + (f"; maps: {', '.join(modes)}" if modes else ""))
    _say(args, f"PSF map on {done['map_provider']}; Richardson-Lucy on {done['rl_device']} with a "
               f"{done['psf_grid'][0]}x{done['psf_grid'][1]} PSF grid, {st['iterations']} iterations, "
               f"TV {st['tv']:.4g}{chosen}")
    _say(args, "wrote " + ", ".join(done["outputs"]))
    return 0


def cmd_simulate(args) -> int:
    from fiji_bridge.estimation.model import PSFModel
    from fiji_bridge.simulation.simulate import check_simulation
    out = Path(args.output)
    model = PSFModel(args.model)
    # a model with a near-focus companion simulates within the companion's ranges (0-0.35 waves at 0.16 µm
    # pixels: small PSFs, quick test data); the large blur the default reads is what `make demo` shows
    cfg = model.near_focus.config if model.near_focus is not None else model.config
    check_simulation(cfg, args.seed, (args.size, args.size), args.photons)     # before the folder is made
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        _write_simulations(args, out, cfg, written)
    except BaseException:                  # a failed run leaves neither new files nor an empty folder
        for path in written:
            path.unlink(missing_ok=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    _say(args, f"wrote quadrants and tilted simulations to {out}")
    return 0


def _write_simulations(args, out: Path, cfg, written: list[Path]) -> None:
    """The six TIFFs of ``semiblind simulate``; ``written`` collects the files this run created."""
    from fiji_bridge.simulation.simulate import simulate_quadrants, simulate_tilted
    from fiji_bridge.io.tiff import write_imagej_tiff

    def write(path: Path, *a, **k) -> None:
        new = not path.exists()
        write_imagej_tiff(path, *a, **k)
        if new:
            written.append(path)
    for name, sim in (("quadrants", simulate_quadrants(cfg, args.seed, (args.size, args.size), args.photons)),
                      ("tilted", simulate_tilted(cfg, args.seed, (args.size, args.size), args.photons))):
        px = cfg.optics.pixel_size
        info = {"simulation": name, "seed": args.seed, "photons": args.photons, "optics": cfg.optics.to_dict()}
        write(out / f"{name}.tif", sim.blurred, px, info=info)
        write(out / f"{name}_truth.tif", sim.truth, px, info=info)
        stride = int(sim.centres_x[1] - sim.centres_x[0]) if len(sim.centres_x) > 1 else cfg.patch_size
        write(out / f"{name}_true_map.tif", sim.true_map, stride * px, labels=sim.names,
              info={**info, "parameters": sim.names, "units": cfg.units, "stride_px": stride,
                    "first_centre_px": [float(sim.centres_y[0]), float(sim.centres_x[0])]})


def _say(args, message: str) -> None:
    _release_warnings()
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


#: Warnings held back while the input is validated (None: printed as they come).
_held_warnings: list[str] | None = None


def _warnings_to_stderr() -> None:
    """Inside `warnings.catch_warnings`: every warning (e.g. undersampled optics) reaches the user as one
    line on stderr, each message once. Until the work starts (`_release_warnings`: first progress update,
    or success) they are held back, so that input refused by validation prints its one error line alone."""
    global _held_warnings
    _held_warnings = []

    def show(message, category, filename, lineno, file=None, line=None):
        text = f"semiblind: warning: {' '.join(str(message).split())}"
        if _held_warnings is None:
            print(text, file=sys.stderr)
        else:
            _held_warnings.append(text)
    warnings.simplefilter("once", category=UserWarning)
    warnings.showwarning = show


@contextlib.contextmanager
def _library_logs_as_warnings():
    """tifffile reports odd files through `logging` (stray lines on stderr next to the error line); inside
    the CLI its records become warnings: one line each, once, held back like the others."""
    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.warn(record.getMessage(), UserWarning, stacklevel=2)
    logger = logging.getLogger("tifffile")
    handler, propagate = Handler(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _release_warnings(discard: bool = False) -> None:
    """Print the held-back warnings (``discard``: drop them, the run failed with its own error line)."""
    global _held_warnings
    held, _held_warnings = _held_warnings or [], None
    for text in [] if discard else held:
        print(text, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="semiblind", description="Calibration-free spatially-variant deconvolution")
    ap.add_argument("--version", action="version", version=f"semiblind {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("psf", help="render a Zernike PSF to a 32-bit TIFF")
    add_arguments(p, OPTICS_FIELDS, required_optics=True)
    p.add_argument("--defocus", type=float, default=0.0, help="Z4 defocus (waves RMS)")
    p.add_argument("--astig-0", type=float, default=0.0, help="Z6 astigmatism 0° (waves RMS)")
    p.add_argument("--astig-45", type=float, default=0.0, help="Z5 astigmatism 45° (waves RMS)")
    p.add_argument("--zernike", default="", help="more terms as NOLL=WAVES,... e.g. 4=0.3,11=0.1")
    p.add_argument("--size", type=int, default=65, help="odd PSF side (pixels), at most 2047")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_psf)

    def common(q, options):
        q.add_argument("input", help="TIFF, OME-TIFF, ImageJ hyperstack or OME-Zarr: a 2-D image or planes along "
                                     "T, Z, C (8/16/32-bit)")
        q.add_argument("--quiet", action="store_true")
        add_arguments(q, options)              # the run settings: `fiji_bridge.settings.RunSettings`

    p = sub.add_parser("psf-map", help="estimate the PSF-parameter map only")
    common(p, MAP_OPTIONS)
    p.add_argument("-o", "--output", required=True, help="map stack (.tif)")
    p.set_defaults(func=cmd_psf_map)

    p = sub.add_parser("deconvolve", help="estimate the PSF map and deconvolve")
    common(p, DECONVOLVE_OPTIONS)
    p.add_argument("-o", "--output", required=True, help="restored 32-bit TIFF, the input's axes (OME-TIFF for "
                                                          "OME input, else an ImageJ hyperstack), or OME-Zarr "
                                                          "(OUT.zarr; a plate or series in, the same layout out)")
    add_pyramid_argument(p)
    p.add_argument("--map", default=None, help="also write the parameter map stack here")
    p.add_argument("--report", default=None, help="also write a PNG report figure here")
    p.set_defaults(func=cmd_deconvolve)

    p = sub.add_parser("simulate", help="write test specimens blurred by known PSF fields, with ground truth")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0")
    p.add_argument("--size", type=int, default=512, help="image side in pixels, one model patch to 4096")
    p.add_argument("--photons", type=float, default=500.0, help="peak photon count")
    p.add_argument("--model", default=None, help="model whose optics and ranges to simulate (its near-focus model's "
                                                           "when it has one: the bundled default's)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_simulate)

    for module in ("imagej", "batch"):    # optional front-ends, present when their extras are
        try:
            importlib.import_module(f"{__package__}.{module}").register(sub)
        except ImportError:
            pass
    return ap


def main(argv: list[str] | None = None) -> int:
    from fiji_bridge.io.atomic import Terminated, terminate_gracefully, terminated_by
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:             # a usage error (one line on stderr, status 2), --help, --version
        return exc.code if isinstance(exc.code, int) else 2
    try:
        # SIGTERM/SIGHUP unwind like Ctrl-C, so no temporary output is left behind
        with terminate_gracefully(), warnings.catch_warnings():
            _warnings_to_stderr()
            with _library_logs_as_warnings():
                code = int(args.func(args) or 0)
            _release_warnings()
            return code
    except (ValueError, RuntimeError, OSError) as exc:
        _release_warnings(discard=True)
        if terminated_by():                # a signal that surfaced as another error is still a signal
            print(f"semiblind: {Terminated(terminated_by())}", file=sys.stderr)
            return 128 + terminated_by()
        print(f"semiblind: error: {exc}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"semiblind: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("semiblind: interrupted", file=sys.stderr)
        return 130
    except Exception:
        if terminated_by():                # e.g. SIGTERM during an import, raised as ImportError
            print(f"semiblind: {Terminated(terminated_by())}", file=sys.stderr)
            return 128 + terminated_by()
        raise


if __name__ == "__main__":
    sys.exit(main())
