"""``python -m training synth|train|export|evaluate|quantize|bounds|reading|depth``: build SemiBlind's PSF-regression model."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import TrainingConfig

#: Training config of the bundled default model (the envelope model, final stage; warm-started from
#: ``envelope.json``'s run; ``reproduce_default.sh``) and of its near-focus companion (v1.1, ``reproduce_near_focus.sh``).
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "envelope_smooth_b.json"
NEAR_FOCUS_CONFIG = Path(__file__).parent / "configs" / "default.json"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m {__package__ or 'training'}", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write a shard of synthetic samples (.npz) for inspection or caching")
    s.add_argument("--config", default=DEFAULT_CONFIG)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("-n", type=_positive_int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", choices=["train", "heldout"], default="train")
    t = sub.add_parser("train", help="train or resume into a run folder")
    t.add_argument("--config", default=DEFAULT_CONFIG)
    t.add_argument("--out", required=True, help="run folder (checkpoint.pt, metrics.jsonl)")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--max-steps", type=int, default=None, help="stop early (the LR schedule is unchanged)")
    t.add_argument("--init-from", default=None, help="warm-start from another run's checkpoint (weights only)")
    t.add_argument("--quiet", action="store_true")
    e = sub.add_parser("export", help="export a checkpoint to ONNX + JSON config, verified with ONNX Runtime")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("-o", "--output", required=True, help="path of the .onnx file")
    e.add_argument("--patch-size", type=int, default=None,
                   help="patch side the exported model reads (default: the training patch size); the network is "
                        "fully convolutional with global pooling, so a larger patch gives it more context")
    v = sub.add_parser("evaluate", help="held-out metrics of an ONNX model; optionally stored in its config")
    v.add_argument("--model", required=True)
    v.add_argument("--config", default=DEFAULT_CONFIG)
    v.add_argument("--out", required=True, help="folder for metrics.json and scatter.png")
    v.add_argument("-n", type=_positive_int, default=1000)
    v.add_argument("--store", action="store_true", help="write the metrics into the model's JSON config")
    q = sub.add_parser("quantize", help="int8 copy of an ONNX model for the CPU, named in its JSON config")
    q.add_argument("--model", required=True, help="float ONNX model (its JSON config is updated)")
    q.add_argument("--config", default=DEFAULT_CONFIG, help="training config whose synthesis calibrates it")
    q.add_argument("-n", type=_positive_int, default=1024, help="calibration patches")
    b = sub.add_parser("bounds", help="non-blind Bayes ceiling of defocus accuracy next to a model's metrics")
    b.add_argument("--model", default=None, help="single-channel ONNX model (default: the bundled near-focus one)")
    b.add_argument("--config", default=NEAR_FOCUS_CONFIG)
    b.add_argument("-o", "--output", required=True, help="path of the JSON report")
    b.add_argument("-n", type=_positive_int, default=1000)
    r = sub.add_parser("reading", help="diagnostic: a context model's defocus reading per NA/n (JSON report)")
    r.add_argument("--model", default=None, help="context ONNX model (default: the bundled one)")
    r.add_argument("-o", "--output", default="benchmarks/results/reading_by_na.json")
    d = sub.add_parser("depth", help="fit the defocus-to-depth table against psfmodels' vectorial PSF")
    d.add_argument("-o", "--output", default="fiji_bridge/models/defocus_depth.json")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "synth":
            from .synthesis import synthesize
            cfg = TrainingConfig.load(args.config)
            b = synthesize(cfg, np.random.default_rng(args.seed), args.n, split=args.split)
            np.savez_compressed(args.output, inputs=b.inputs, labels=b.labels, informative=b.informative,
                                names=np.array(cfg.model.names))
            print(f"wrote {args.n} samples to {args.output}")
        elif args.command == "train":
            from .train import train
            cfg = TrainingConfig.load(args.config)
            ckpt = train(cfg, args.out, resume=not args.fresh, progress=not args.quiet, max_steps=args.max_steps,
                         init_from=args.init_from)
            print(f"checkpoint: {ckpt}")
        elif args.command == "export":
            from .export import export_onnx
            from .train import load_checkpoint
            model, cfg, step = load_checkpoint(args.checkpoint)
            mc = cfg.model
            mc.training_data = {"sources": "skimage.data images shipped in the wheel + procedural specimens "
                                "(training/sources.py, fiji_bridge/specimens.py)", "steps": step,
                                "samples": step * cfg.train.batch_size, "patch_size": mc.patch_size,
                                "noise": cfg.to_dict()["noise"], "synthesis": cfg.to_dict()["synthesis"]}
            if args.patch_size is not None:
                if args.patch_size < mc.psf_size:
                    raise ValueError(f"--patch-size {args.patch_size} is smaller than the PSF size {mc.psf_size}")
                mc.patch_size = args.patch_size
            diff = export_onnx(model, mc, args.output)
            print(f"exported {args.output} (ORT vs PyTorch max |diff| = {diff:.2e})")
        elif args.command == "evaluate":
            from fiji_bridge.estimation.model import config_path_for
            from fiji_bridge.estimation.model_config import ModelConfig
            from .evaluate import evaluate
            cfg = TrainingConfig.load(args.config)
            summary = evaluate(args.model, cfg, n=args.n, out_dir=args.out)
            print(json.dumps(summary, indent=1))
            if args.store:
                path = config_path_for(Path(args.model))
                mc = ModelConfig.load(path)
                mc.metrics = summary
                # the σ the model reported was already scaled by its sigma_scale: the new factor multiplies it
                fit = summary["sigma_calibration"]
                mc.parameters = [replace(q, sigma_scale=round(q.sigma_scale * fit[q.name]["factor"], 4))
                                 for q in mc.parameters]
                mc.save(path)
        elif args.command == "quantize":
            from .quantize import quantize_model
            out = quantize_model(args.model, TrainingConfig.load(args.config), n=args.n)
            print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); named in {Path(args.model).with_suffix('.json')}")
        elif args.command == "bounds":
            from .bounds import bound_report
            report = bound_report(args.model, TrainingConfig.load(args.config), n=args.n)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
            print(json.dumps(report["levels"], indent=1))
        elif args.command == "reading":
            from .reading_by_na import main as reading_table
            reading_table(args.model, args.output)
            print(f"wrote {args.output}")
        elif args.command == "depth":
            from .depth_calibration import main as depth_table
            depth_table(args.output)
            print(f"wrote {args.output}")
    except (ValueError, RuntimeError, OSError) as exc:
        # one line for the user: a bad config or path, a failed export check, a missing checkpoint
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
