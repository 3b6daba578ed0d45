"""``semiblind`` command line: psf, psf-map, deconvolve, simulate (+ fiji/imagej and batch when installed)."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path


from . import __version__


def _optics_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_argument_group("optics (default: the image's calibration and the model's optics)")
    g.add_argument("--na", type=float, required=required, help="numerical aperture")
    g.add_argument("--wavelength", type=float, required=required, help="emission wavelength (µm)")
    g.add_argument("--pixel-size", type=float, required=required, help="pixel size in the object plane (µm)")
    g.add_argument("--n", type=float, default=None, help="immersion refractive index (default 1.0 / model's)")


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
    from .optics import Optics
    from .psf import zernike_psf
    from .tiff_io import write_imagej_tiff
    optics = Optics(na=args.na, wavelength=args.wavelength, pixel_size=args.pixel_size, n=args.n or 1.0)
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
    return {"na": args.na, "wavelength": args.wavelength, "pixel_size": args.pixel_size, "n": args.n}


def _note_calibration(args, done: dict) -> None:
    if not done["calibrated"] and not args.pixel_size:
        _say(args, f"note: {Path(args.input).name} has no pixel calibration; assumed the model's "
                   f"{done['optics']['pixel_size']} µm (use --pixel-size)")


def cmd_psf_map(args) -> int:
    from .model import PSFModel
    from .pipeline import image_optics, open_image, write_psf_map
    from .psf_map import estimate_psf_map
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise ValueError(f"refusing to overwrite the input file {args.input}")
    img, _ = open_image(args.input)                    # large files are read band by band
    model = PSFModel(args.model, device=args.device)
    optics = image_optics(img.pixel_size, model.config.optics, **_optics_kwargs(args))
    psf_map = estimate_psf_map(img.data, model=model, stride=args.stride, optics=optics, device=args.device)
    _say(args, f"PSF map: {psf_map.parameters.shape[1]}x{psf_map.parameters.shape[2]} patches on {psf_map.provider}")
    write_psf_map(args.output, psf_map, args.input)
    _say(args, f"wrote {args.output}")
    return 0


def cmd_deconvolve(args) -> int:
    from .pipeline import process_file
    bar = _ProgressBar(args.quiet)
    try:
        done = process_file(args.input, args.output, map_path=args.map, report_path=args.report,
                            iterations=args.iterations, tv=args.tv, model=args.model, stride=args.stride,
                            grid=args.grid, tile=args.tile, device=args.device, progress=bar,
                            **_optics_kwargs(args))
    finally:
        bar.close()
    _note_calibration(args, done)
    _say(args, f"PSF map on {done['map_provider']}; Richardson-Lucy on {done['rl_device']} with a "
               f"{done['psf_grid'][0]}x{done['psf_grid'][1]} PSF grid")
    _say(args, "wrote " + ", ".join(done["outputs"]))
    return 0


def cmd_simulate(args) -> int:
    from .model import PSFModel
    from .simulate import simulate_quadrants, simulate_tilted
    from .tiff_io import write_imagej_tiff
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cfg = PSFModel(args.model).config
    for name, sim in (("quadrants", simulate_quadrants(cfg, args.seed, (args.size, args.size), args.photons)),
                      ("tilted", simulate_tilted(cfg, args.seed, (args.size, args.size), args.photons))):
        px = cfg.optics.pixel_size
        info = {"simulation": name, "seed": args.seed, "photons": args.photons, "optics": cfg.optics.to_dict()}
        write_imagej_tiff(out / f"{name}.tif", sim.blurred, px, info=info)
        write_imagej_tiff(out / f"{name}_truth.tif", sim.truth, px, info=info)
        stride = int(sim.centres_x[1] - sim.centres_x[0]) if len(sim.centres_x) > 1 else cfg.patch_size
        write_imagej_tiff(out / f"{name}_true_map.tif", sim.true_map, stride * px, labels=sim.names,
                          info={**info, "parameters": sim.names, "units": cfg.units, "stride_px": stride,
                                "first_centre_px": [float(sim.centres_y[0]), float(sim.centres_x[0])]})
    _say(args, f"wrote quadrants and tilted simulations to {out}")
    return 0


def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def _grid(text: str) -> tuple[int, int]:
    try:
        gy, gx = (int(v) for v in text.lower().split("x"))
        if gy < 1 or gx < 1:
            raise ValueError
        return gy, gx
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GYxGX such as 4x4, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="semiblind", description="Calibration-free spatially-variant deconvolution")
    ap.add_argument("--version", action="version", version=f"semiblind {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("psf", help="render a Zernike PSF to a 32-bit TIFF")
    _optics_args(p, required=True)
    p.add_argument("--defocus", type=float, default=0.0, help="Z4 defocus (waves RMS)")
    p.add_argument("--astig-0", type=float, default=0.0, help="Z6 astigmatism 0° (waves RMS)")
    p.add_argument("--astig-45", type=float, default=0.0, help="Z5 astigmatism 45° (waves RMS)")
    p.add_argument("--zernike", default="", help="more terms as NOLL=WAVES,... e.g. 4=0.3,11=0.1")
    p.add_argument("--size", type=int, default=65, help="odd PSF side (pixels)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_psf)

    def common(q):
        q.add_argument("input", help="2-D TIFF (8/16/32-bit)")
        q.add_argument("--stride", type=int, default=None, help="window step in model pixels (default: half a patch)")
        q.add_argument("--model", default=None, help="ONNX model (default: bundled)")
        q.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
        q.add_argument("--quiet", action="store_true")
        _optics_args(q)

    p = sub.add_parser("psf-map", help="estimate the PSF-parameter map only")
    common(p)
    p.add_argument("-o", "--output", required=True, help="map stack (.tif)")
    p.set_defaults(func=cmd_psf_map)

    p = sub.add_parser("deconvolve", help="estimate the PSF map and deconvolve")
    common(p)
    p.add_argument("-o", "--output", required=True, help="restored 32-bit TIFF")
    p.add_argument("--map", default=None, help="also write the parameter map stack here")
    p.add_argument("--report", default=None, help="also write a PNG report figure here")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--tv", type=float, default=0.002, help="TV weight in [0, 0.2]")
    p.add_argument("--grid", type=_grid, default=None, help="PSF grid GYxGX (default: cells of ~2 patches)")
    p.add_argument("--tile", type=int, default=None,
                   help="deconvolve in overlapping tiles of at most N x N pixels (default: 1024 above 4096² pixels)")
    p.set_defaults(func=cmd_deconvolve)

    p = sub.add_parser("simulate", help="write test specimens blurred by known PSF fields, with ground truth")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--photons", type=float, default=500.0, help="peak photon count")
    p.add_argument("--model", default=None, help="model whose optics and ranges to simulate")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_simulate)

    for module in ("imagej_cli", "batch_cli"):    # optional front-ends, present when their extras are
        try:
            importlib.import_module(f"{__package__}.{module}").register(sub)
        except ImportError:
            pass
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            return int(args.func(args) or 0)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"semiblind: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("semiblind: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
