"""White-box reference for docs/results/decision-attacks.md: the smallest L2 radius at which
L2 PGD (100 steps, step 2.5 ε/100) finds an adversarial example, bisected to 5/2^10, for the
images the fidelity runs attacked. It looks behind the black-box boundary on purpose (it loads
the served model), so it lives here, not in ``attacks_client``.

``python docs/results/decision_attacks_whitebox.py runs/fidelity`` reads the image indices from
``none-hsja.jsonl`` and writes ``whitebox.json`` (image index -> L2) next to it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from service.datasets import mnist_subset

from service.models.registry import get_spec


def pgd_succeeds(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, steps: int = 100
) -> torch.Tensor:
    """Per image: does L2 PGD within ``eps`` (one radius per image) misclassify it?"""
    radius = eps.view(-1, 1, 1, 1)
    delta = torch.zeros_like(x, requires_grad=True)
    found = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12
            delta = delta + 2.5 * radius / steps * grad / norm
            size = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12
            delta = torch.clamp(x + delta * torch.clamp(radius / size, max=1.0), 0, 1) - x
            found |= net(x + delta).argmax(1) != y
        delta.requires_grad_(True)
    return found


def main(root: Path) -> None:
    records = [json.loads(line) for line in (root / "none-hsja.jsonl").read_text().splitlines()]
    indices = [r["image_index"] for r in records]
    data = mnist_subset("test")
    x = torch.from_numpy(data.images[indices])
    y = torch.from_numpy(data.labels[indices])
    net = get_spec("resnet20-mnist").build()
    low, high = torch.zeros(len(x)), torch.full((len(x),), 5.0)
    for _ in range(10):
        mid = (low + high) / 2
        ok = pgd_succeeds(net, x, y, mid)
        high, low = torch.where(ok, mid, high), torch.where(ok, low, mid)
    radii = high.numpy().tolist()
    print(f"median {np.median(radii):.3f}, mean {np.mean(radii):.3f}")
    table = dict(zip(map(str, indices), radii, strict=True))
    (root / "whitebox.json").write_text(json.dumps(table))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fidelity"))
