"""Training loop: on-the-fly synthetic batches, Adam + one-cycle LR, resumable checkpoints, JSON-lines log."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from .config import TrainingConfig
from .network import PSFRegressor, loss_terms
from .synthesis import synthesize

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class SyntheticStream(IterableDataset):
    """Endless stream of batches; batch ``k`` depends only on (seed, k), whatever the worker count."""

    def __init__(self, cfg: TrainingConfig, start_step: int = 0):
        self.cfg, self.start_step = cfg, start_step

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        step = self.start_step + wid
        while True:
            b = synthesize(self.cfg, np.random.default_rng([self.cfg.train.seed, step]), self.cfg.train.batch_size)
            beyond = b.beyond if b.beyond is not None else np.zeros(len(b.labels), bool)
            yield (torch.from_numpy(b.inputs), torch.from_numpy(self.cfg.model.normalize(b.labels)),
                   torch.from_numpy(b.informative), torch.from_numpy(beyond))
            step += nw


def build_model(cfg: TrainingConfig) -> PSFRegressor:
    m = cfg.model
    return PSFRegressor(len(m.parameters), widths=tuple(cfg.train.widths), in_channels=m.input_channels,
                        range_output="range_logit" in m.outputs)


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def validation_batch(cfg: TrainingConfig, n: int = 384):
    """Fixed held-out batch (held-out images and seeds) for monitoring."""
    b = synthesize(cfg, np.random.default_rng([cfg.train.seed, 999_999]), n, split="heldout")
    beyond = b.beyond if b.beyond is not None else np.zeros(len(b.labels), bool)
    return torch.from_numpy(b.inputs), b.labels, b.informative, beyond


def train(cfg: TrainingConfig, out_dir: str | Path, resume: bool = True, progress: bool = True,
          max_steps: int | None = None, init_from: str | Path | None = None) -> Path:
    """Train (or resume) into ``out_dir``; returns the checkpoint path.

    ``max_steps`` stops early without changing the schedule defined by ``cfg.train.steps``.
    ``init_from`` warm-starts a new run from another run's weights (fresh optimiser and schedule);
    it is ignored when ``out_dir`` already has a checkpoint to resume.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=tc.steps, pct_start=0.05)
    step = 0
    ckpt = out / CHECKPOINT
    if resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != cfg.to_dict():
            raise ValueError(f"{ckpt} was trained with a different config; use a new output folder")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]
    else:
        if init_from is not None:
            warm, _, warm_step = load_checkpoint(init_from)
            model.load_state_dict(warm.state_dict())
            (out / "init_from.json").write_text(json.dumps({"checkpoint": str(init_from), "step": warm_step}) + "\n")
        cfg.save(out / "training_config.json")
    stop = min(tc.steps, max_steps if max_steps is not None else tc.steps)
    if step >= stop:
        return ckpt
    val_x, val_y, val_info, val_beyond = validation_batch(cfg)
    loader = DataLoader(SyntheticStream(cfg, step), batch_size=None, num_workers=tc.workers,
                        persistent_workers=False, prefetch_factor=4 if tc.workers else None)
    log = (out / METRICS).open("a")
    bar = tqdm(total=stop, initial=step, disable=not progress, desc="train", unit="step")
    t0, seen = time.perf_counter(), 0
    model.train()
    for x, y, info, beyond in loader:
        terms = loss_terms(model(x), y, info, beyond, beyond_at_top=tc.beyond_at_top)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        sched.step()
        step += 1
        seen += len(x)
        bar.update(1)
        if step % 25 == 0 or step == stop:
            rec = {"step": step, "lr": sched.get_last_lr()[0], "samples_per_s": seen / (time.perf_counter() - t0),
                   **{k: float(v.detach()) for k, v in terms.items()}}
            if step % tc.checkpoint_every == 0 or step == stop:
                rec.update(validate(model, cfg, val_x, val_y, val_info, val_beyond))
                _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict(), "step": step, "config": cfg.to_dict()}, ckpt)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        if step >= stop:
            break
    bar.close()
    log.close()
    return ckpt


@torch.no_grad()
def validate(model: PSFRegressor, cfg: TrainingConfig, x: torch.Tensor, labels: np.ndarray,
             informative: np.ndarray, beyond: np.ndarray | None = None) -> dict:
    was_training = model.training
    model.eval()
    outputs = model(x)
    model.train(was_training)
    mean, logit = outputs[0], outputs[2]
    beyond = np.zeros(len(labels), bool) if beyond is None else beyond
    pred = cfg.model.denormalize(mean.numpy())
    err = (pred - labels)[informative & ~beyond]
    out = {f"val_rmse_{n}": float(np.sqrt(np.mean(err[:, k] ** 2))) for k, n in enumerate(cfg.model.names)}
    out["val_info_accuracy"] = float(np.mean((logit[:, 0].numpy() > 0) == informative))
    if len(outputs) > 3:
        out["val_range_accuracy"] = float(np.mean(((outputs[3][:, 0].numpy() > 0) == beyond)[informative]))
    return out


def load_checkpoint(path: str | Path) -> tuple[PSFRegressor, TrainingConfig, int]:
    state = torch.load(path, weights_only=False)
    cfg = TrainingConfig.from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg, state["step"]
