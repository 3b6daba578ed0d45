"""Compact ResNet-style CNN regressing PSF parameters, their uncertainty and an information flag."""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class PSFRegressor(nn.Module):
    """Patch (B, 1, P, P) -> normalised parameters, their log-variance and an information logit.

    A full-resolution stem keeps the finest blur cues; four stride-2 stages with one residual block
    each (P/16 at the end) and global average pooling make the estimate a property of the whole patch.
    About 70 MFLOP per 64x64 patch, so a 1024² image's map runs in about a second on a CPU.
    """

    def __init__(self, n_params: int, widths: tuple[int, ...] = (16, 32, 64, 128, 192), hidden: int = 128,
                 in_channels: int = 1, range_output: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                   nn.BatchNorm2d(widths[0]),
                                   nn.ReLU(inplace=True)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [_down(cin, cout)]
            if cout != widths[-1]:
                layers += [BasicBlock(cout)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1], hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 2 * n_params + 1 + int(range_output)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.n_params = n_params
        self.range_output = range_output

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(mean in [-1, 1], log variance, information logit[, out-of-range logit]), each (B, ·)."""
        out = self.head(self.pool(self.features(x)))
        k = self.n_params
        heads = (torch.tanh(out[:, :k]), out[:, k:2 * k].clamp(-12.0, 6.0), out[:, 2 * k:2 * k + 1])
        return (*heads, out[:, 2 * k + 1:]) if self.range_output else heads


def loss_terms(outputs, target: torch.Tensor, informative: torch.Tensor,
               beyond: torch.Tensor | None = None, beyond_at_top: bool = False) -> dict[str, torch.Tensor]:
    """Training loss: Euclidean on normalised parameters (paper eq. 4) for informative patches, a Gaussian
    NLL on the predicted variance with the mean detached (so uncertainty never pulls the estimate), and
    binary cross-entropy on the information flag. With an out-of-range head, patches whose blur lies
    beyond the range teach the out-of-range flag and are left out of the regression, or, with
    ``beyond_at_top``, regressed to the top of the range (normalised targets clipped at 1), where the runtime
    reads them too. That option tested whether a regression that never sees labels beyond the top under-reads
    large blur (1024² tilts read 1.38 waves as 1.23-1.25): after 2000 steps with it (stage envelope_top) they
    still read 1.20-1.31, and the restorations did not improve (README, "Training the models")."""
    mean, log_var, logit = outputs[:3]
    w = informative.float()
    extra = {}
    if len(outputs) > 3 and beyond is not None:
        b = beyond.float()
        n_info = w.sum().clamp(min=1.0)
        extra["range_bce"] = (nn.functional.binary_cross_entropy_with_logits(outputs[3][:, 0], b, reduction="none")
                              * w).sum() / n_info
        if beyond_at_top:
            target = target.clamp(max=1.0)
        else:
            w = w * (1.0 - b)
    n = w.sum().clamp(min=1.0)
    sq = (mean - target) ** 2
    mse = (sq.sum(1) * w).sum() / n
    nll = ((0.5 * (log_var + sq.detach() * torch.exp(-log_var))).sum(1) * w).sum() / n
    bce = nn.functional.binary_cross_entropy_with_logits(logit[:, 0], informative.float())
    loss = mse + 0.1 * nll + 0.1 * bce + 0.1 * extra.get("range_bce", 0.0)
    return {"loss": loss, "mse": mse, "nll": nll, "bce": bce, **extra}
