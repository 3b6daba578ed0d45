"""CNN speed: ONNX Runtime inference (patches/s, batch 64) of the bundled model, PyTorch training throughput
(samples/s) and synthesis throughput (samples/s). Prints JSON.

    python benchmarks/bench_model.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # `training` is repo-level, not installed


def timed(fn, repeat: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rep = 2 if args.quick else 8
    from fiji_bridge.estimation.model import PSFModel
    model = PSFModel()
    p = model.config.patch_size
    patches = np.random.default_rng(0).random((64, p, p)).astype(np.float32)
    ort_s = timed(lambda: model.predict(patches, batch_size=64), rep)
    out = {"cpus": os.cpu_count(), "patch_size": p, "ort_provider": model.provider,
           "ort_patches_per_s_batch64": 64 / ort_s}

    import torch
    from training.config import TrainingConfig
    from training.__main__ import DEFAULT_CONFIG
    from training.network import loss_terms
    from training.synthesis import synthesize
    from training.train import build_model
    cfg = TrainingConfig.load(DEFAULT_CONFIG)
    bs = cfg.train.batch_size
    b = synthesize(cfg, np.random.default_rng(0), bs)
    x, y = torch.from_numpy(b.inputs), torch.from_numpy(cfg.model.normalize(b.labels))
    info = torch.from_numpy(b.informative)
    net = build_model(cfg)
    opt = torch.optim.AdamW(net.parameters())

    def step():
        loss = loss_terms(net(x), y, info)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    out["train_samples_per_s"] = bs / timed(step, rep)
    out["synthesis_samples_per_s_one_process"] = bs / timed(lambda: synthesize(cfg, np.random.default_rng(1), bs),
                                                            max(1, rep // 2))
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
