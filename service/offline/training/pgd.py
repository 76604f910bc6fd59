"""L2 projected gradient descent (Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards deep
learning models resistant to adversarial attacks", ICLR 2018), as in MadryLab/robustness
(``attack_steps.L2Step``): normalized-gradient ascent steps of length ``step_size``, projection
onto the ε-ball around x (``renorm``) and onto [0, 1]; optionally a random start and the
highest-loss iterate per image (``use_best``, the library's default).

White-box and in-process: used for adversarial training and to check robustness in tests.
The black-box attacks live in ``attacks_client`` and never import this.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _l2_normalize(g: torch.Tensor) -> torch.Tensor:
    norms = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.dim() - 1)))
    return g / (norms + 1e-10)


def _project(x0: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    delta = (x - x0).renorm(p=2, dim=0, maxnorm=eps)
    return (x0 + delta).clamp(0.0, 1.0)


def l2_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float | None = None,
    random_start: bool = False,
    use_best: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted L2 PGD on a [0, 1]-input model: maximize cross-entropy within ‖δ‖₂ ≤ ε.

    ``step_size`` defaults to 2.5 · ε / steps (Madry et al.). The model's mode is left as it
    is (call ``model.eval()`` first for batch-norm statistics, as robustness does). Returns
    detached adversarial images.
    """
    if eps <= 0 or steps <= 0:
        return x.detach().clone()
    step = 2.5 * eps / steps if step_size is None else step_size
    x0 = x.detach()
    adv = x0.clone()
    if random_start:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        radius = torch.rand(x0.shape[0], generator=generator).view(-1, *([1] * (x0.dim() - 1)))
        adv = _project(x0, x0 + _l2_normalize(noise) * radius * eps, eps)
    best, best_loss = adv.clone(), torch.full((x0.shape[0],), -float("inf"))
    for i in range(steps + 1):
        if i == steps and not use_best:
            break
        adv.requires_grad_(True)
        with torch.enable_grad():
            losses = F.cross_entropy(model(adv), y, reduction="none")
            grad = None if i == steps else torch.autograd.grad(losses.sum(), adv)[0]
        with torch.no_grad():
            if use_best:
                better = losses.detach() > best_loss
                best[better] = adv.detach()[better]
                best_loss = torch.where(better, losses.detach(), best_loss)
            if grad is None:
                break
            adv = _project(x0, adv.detach() + step * _l2_normalize(grad), eps)
    return (best if use_best else adv).detach()


def l2_pgd_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    batch_size: int = 250,
) -> float:
    """Accuracy of ``model`` (in its current mode) under L2 PGD at ``eps``."""
    correct = 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        adv = l2_pgd(model, xb, yb, eps=eps, steps=steps)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == yb).sum())
    return correct / len(y)
