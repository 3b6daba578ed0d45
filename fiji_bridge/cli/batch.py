"""``semiblind batch IN_DIR -o OUT_DIR``: every matching file, resumable, on Dask.

Registered into the main CLI with `register`. Exit codes: 0 all files done or skipped, 1 some files
failed (listed with reasons), 2 bad input (folders, options, unreachable scheduler) — then nothing
has been written.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from fiji_bridge.cli.semiblind import add_pyramid_argument
from fiji_bridge.io.atomic import NoSpaceError
from fiji_bridge.parallel.batch import BatchError, Job, deconvolve_folder
from fiji_bridge.parallel.dask_engine import EngineError
from fiji_bridge.settings import DECONVOLVE_OPTIONS, add_arguments, from_args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``batch`` command to the ``semiblind`` sub-parsers; returns its parser."""
    p = subparsers.add_parser(
        "batch", help="deconvolve every matching file of a folder (resumable; Dask)",
        description="Deconvolve every file of IN_DIR matching --pattern into OUT_DIR. Outputs are written "
                    "atomically and recorded in OUT_DIR/semiblind-manifest.jsonl; rerunning skips finished "
                    "files. Runs on an embedded local Dask cluster, or on an existing one with --scheduler.")
    p.add_argument("input_dir", metavar="IN_DIR", help="folder of TIFF / OME-TIFF images or stacks and OME-Zarr "
                                                        "folders (.zarr; written as .zarr)")
    p.add_argument("-o", "--output", dest="output_dir", metavar="OUT_DIR", required=True,
                   help="output folder (created; not inside IN_DIR)")
    p.add_argument("--pattern", default=None,
                   help="glob pattern relative to IN_DIR, without '..'; '**/*.tif' recurses (default: every "
                        ".tif/.tiff file and .zarr folder of IN_DIR, any case)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="worker processes of the embedded cluster (default: CPU cores; 1: no cluster, "
                        "run in this process)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: embedded cluster)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_arguments(p, DECONVOLVE_OPTIONS)       # the run settings of `semiblind deconvolve` (`RunSettings`)
    add_pyramid_argument(p)
    p.set_defaults(func=handler)
    return p


def job_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options of `fiji_bridge.pipeline.process_file` from the command line: iterations, tv and device,
    and every other setting that is given, ``pyramid`` when not 1 (what the manifest records)."""
    settings = from_args(args)
    levels = getattr(args, "pyramid", 1)
    return {"iterations": settings.iterations, "tv": settings.tv, "device": settings.device, **settings.options(),
            **({"pyramid": levels} if levels != 1 else {})}


def run(args: argparse.Namespace, job: Job | None = None) -> int:
    """Run the batch described by ``args``; ``job`` replaces the pipeline (tests, other tools).

    Returns
    -------
    int
        0 all done or skipped, 1 some files failed, 2 bad input (nothing written).
    """
    try:
        summary = deconvolve_folder(args.input_dir, args.output_dir, args.pattern, scheduler=args.scheduler,
                                    workers=args.workers, job=job, progress=not args.quiet, **job_options(args))
    except (BatchError, EngineError, NoSpaceError) as exc:
        print(f"semiblind batch: error: {exc}", file=sys.stderr)
        return 2
    print(summary.report(), file=sys.stderr)
    return 0 if summary.ok else 1


def handler(args: argparse.Namespace) -> int:
    """Entry point of ``semiblind batch`` (set as the sub-parser's ``func``)."""
    return run(args)
