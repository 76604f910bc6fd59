"""Subspace Attack: bandit gradient estimation along reference models' gradients (hybrid).

Yiwen Guo, Ziang Yan, Changshui Zhang. "Subspace Attack: Exploiting Promising Subspaces for
Query-Efficient Black-box Attacks", NeurIPS 2019 (arXiv:1906.04392). Ported from the authors'
code, https://github.com/ZiangYan/subspace-attack.pytorch (``attack.py``), as the SND paper did
(App. B.1, D).

Per step: pick one reference model at random, set its dropout ratio from the schedule, and take
the gradient of the victim's loss through it — the victim's logit gradient (from the last
answered scores) back-propagated through the reference model's logits — as the search
direction u. Query the loss at ``x + fd_eta * (v ± exploration*u) / ||.||`` (2 queries, one
request), update the prior v with the finite difference (``momentum``: ``v + prior_lr * g /
||g||_1``), step the image along v and project onto the ε-ball around ``x0`` and into [0, 1].
Probes are clipped to [0, 1].

Counting: 2 queries per step, as the reference counts them. The reference also queries the new
image after every step, uncounted, for its success check and for the victim logits of the next
direction. Here neither costs a query: the next step's two probes lie within ``fd_eta`` of the
new image, so a probe answered adversarial is reported (it ends the attack inside the ε-ball;
for one outside, the new image itself is asked, once),
and the next direction takes the victim's logit gradient at the mean of the probes' log-scores
(for the CW loss only its two top classes matter). In a budget B the attack makes
⌊(B − 1) / 2⌋ steps; the extra query is x0's first answer, uncounted by the reference (the
records carry both counts).

The reference models (:mod:`~attacks_client.attacks.surrogates`) are the client's own small CNNs
trained on its attacker-proxy split; the attack uses those whose input shape and classes fit
the endpoint and refuses to run (:class:`NoReferenceModel`) when none does.

Black-box adaptation: the reference reads the victim's logits; the endpoint returns
probabilities. ``log p`` equals the logits up to a per-image constant, so the CW loss
(``max_{i != y} z_i - z_y``), its logit gradient and the cross-entropy gradient (``p - e_y``)
are exact from the returned scores.

Hyperparameters: the reference's argparse defaults (``exploration=0.1``, ``fd_eta=0.1``,
``prior_lr=1.0`` with ``momentum`` prior update, ``loss=cw``), its dropout schedule (``drop``
held for ``drop_grow_iter=10`` steps, then ``max - (max - init) * exp(-gamma * (t - 10))`` with
``max=0.5``, ``gamma=0.01``) started at 0.05 as the paper describes (the code's default is 0.0).
The reference's ℓ∞ step is ``image_lr=1/255`` in a ball of ``8/255``, and the SND paper ran it
in ℓ∞ (ImageNet, App. D). The default here is L2, the norm every other attack and this project's
evaluation use, with the step keeping the reference's ratio, ``image_lr = epsilon / 8`` — our
own choice, not the reference's; ``norm="linf"`` (with ``image_lr`` 1/255) is the reference's
setting.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from attacks_client.attacks._probes import probe_success, top_is_adversarial
from attacks_client.attacks.base import Attack, AttackOracle
from attacks_client.oracles.base import OracleError


class NoReferenceModel(OracleError, ValueError):
    """No reference model takes the endpoint's input shape and classes (raised before any
    query; an ``OracleError``, so the CLI prints it as one line)."""


def _norm(x: np.ndarray, p: int = 2) -> float:
    """The reference's ``norm``: L2 (or L1) norm with a zero norm replaced by 1e-8."""
    x64 = np.asarray(x, np.float64)
    value = float(np.abs(x64).sum()) if p == 1 else float(np.sqrt(np.square(x64).sum()))
    return value if value > 0 else 1e-8


class SubspaceAttack(Attack):
    """The Subspace Attack (untargeted or targeted; L2 by default, ℓ∞ as in the reference).

    Args:
        epsilon: radius of the ball around ``x0`` (default 4.9 L2, as Bandit-TD in the SND
            paper's App. B.1; the reference's ℓ∞ values are 8/255 (CIFAR-10) and 0.05
            (ImageNet)).
        norm: ``"l2"`` or ``"linf"``.
        loss: ``"cw"`` (reference default) or ``"xent"``.
        exploration: the reference's ``exploration`` (0.1).
        fd_eta: finite-difference step (0.1).
        image_lr: image step; ``None``: ``epsilon / 8`` (L2) or ``1/255`` (ℓ∞, the reference).
        prior_lr: learning rate of the prior (1.0).
        prior_update: ``"momentum"`` (reference default) or ``"gd"``.
        init_drop, max_drop, drop_grow_iter, drop_gamma: the dropout schedule.
        reference_models: comma-separated file stems of the reference models to use
            (``"mnist-cnn,mnist-resnet8"``; ``None``: all that fit).
        weights_dir: where the reference models lie (``None``: the packaged ones).
    """

    name: ClassVar[str] = "subspace"
    needs_scores: ClassVar[bool] = True

    def __init__(
        self,
        epsilon: float = 4.9,
        norm: Literal["l2", "linf"] = "l2",
        loss: Literal["cw", "xent"] = "cw",
        exploration: float = 0.1,
        fd_eta: float = 0.1,
        image_lr: float | None = None,
        prior_lr: float = 1.0,
        prior_update: Literal["momentum", "gd"] = "momentum",
        init_drop: float = 0.05,
        max_drop: float = 0.5,
        drop_grow_iter: int = 10,
        drop_gamma: float = 0.01,
        reference_models: str | None = None,
        weights_dir: str | None = None,
    ) -> None:
        if norm not in ("l2", "linf") or loss not in ("cw", "xent"):
            raise ValueError("norm must be 'l2' or 'linf', loss 'cw' or 'xent'")
        if prior_update not in ("momentum", "gd"):
            raise ValueError("prior_update must be 'momentum' or 'gd'")
        if epsilon <= 0 or exploration <= 0 or fd_eta <= 0:
            raise ValueError("epsilon, exploration and fd_eta must be > 0")
        if not 0 <= init_drop <= max_drop < 1:
            raise ValueError("need 0 <= init_drop <= max_drop < 1")
        self.epsilon = epsilon
        self.norm = norm
        self.loss = loss
        self.exploration = exploration
        self.fd_eta = fd_eta
        self.image_lr = image_lr
        self.prior_lr = prior_lr
        self.prior_update = prior_update
        self.init_drop = init_drop
        self.max_drop = max_drop
        self.drop_grow_iter = drop_grow_iter
        self.drop_gamma = drop_gamma
        self.reference_models = reference_models
        self.weights_dir = weights_dir
        self._models: dict[tuple[tuple[int, ...], int], list[tuple[str, torch.nn.Module]]] = {}

    # -- the pieces of one step -------------------------------------------------------------------

    def drop_at(self, step: int) -> float:
        """The reference's dropout ratio at step ``step`` (0-based)."""
        if step < self.drop_grow_iter:
            return self.init_drop
        decay = math.exp(-(step - self.drop_grow_iter) * self.drop_gamma)
        return self.max_drop - (self.max_drop - self.init_drop) * decay

    @property
    def step_size(self) -> float:
        if self.image_lr is not None:
            return self.image_lr
        return self.epsilon / 8 if self.norm == "l2" else 1 / 255

    def references(
        self, input_shape: tuple[int, int, int], num_classes: int
    ) -> list[tuple[str, torch.nn.Module]]:
        """The reference models that fit (loaded once per shape); :class:`NoReferenceModel`."""
        key = (tuple(input_shape), num_classes)
        if key not in self._models:
            from attacks_client.attacks.surrogates import WEIGHTS_DIR, load_fitting

            directory = Path(self.weights_dir) if self.weights_dir else WEIGHTS_DIR
            names = (
                [n.strip() for n in self.reference_models.split(",")]
                if self.reference_models
                else None
            )
            models = load_fitting(input_shape, num_classes, directory, names)
            if not models:
                raise NoReferenceModel(
                    f"no Subspace Attack reference model in {directory} takes input shape "
                    f"{tuple(input_shape)} with {num_classes} classes; train some on your own "
                    f"proxy data with `python -m attacks_client.attacks.surrogates`"
                )
            self._models[key] = [(name, m.requires_grad_(False)) for name, m in models]
        return self._models[key]

    @staticmethod
    def _logits(probs: np.ndarray) -> np.ndarray:
        """Victim logits up to a per-image constant: ``log p`` (p floored at 1e-45)."""
        return np.log(np.maximum(np.asarray(probs, np.float64), 1e-45))

    def _loss(self, logits: np.ndarray, oracle: AttackOracle) -> np.ndarray:
        """The reference's ``cw_loss`` / ``xent_loss`` of a batch of logits (ascended)."""
        label, target = oracle.label, oracle.target
        if self.loss == "xent":
            cls = target if target is not None else label
            log_p = logits[:, cls] - np.logaddexp.reduce(logits, axis=1)
            return log_p if target is not None else -log_p
        cls = target if target is not None else label
        others = logits.copy()
        others[:, cls] = -np.inf
        margin = others.max(1) - logits[:, cls]
        return -margin if target is not None else margin

    def _logit_grad(self, logits: np.ndarray, oracle: AttackOracle) -> np.ndarray:
        """d loss / d logits at one image's logits ``(classes,)``."""
        label, target = oracle.label, oracle.target
        grad = np.zeros_like(logits)
        if self.loss == "xent":
            probs = np.exp(logits - np.logaddexp.reduce(logits))
            cls = target if target is not None else label
            grad[:] = probs
            grad[cls] -= 1.0
            return -grad if target is not None else grad
        cls = target if target is not None else label
        others = logits.copy()
        others[cls] = -np.inf
        rival = int(np.argmax(others))
        sign = -1.0 if target is not None else 1.0
        grad[rival] += sign
        grad[cls] -= sign
        return grad

    def _direction(
        self,
        model: torch.nn.Module,
        x: np.ndarray,
        logit_grad: np.ndarray,
        drop: float,
        generator: torch.Generator,
    ) -> np.ndarray:
        """The reference's ``calc_ref_grad``: the victim's logit gradient back-propagated
        through the reference model (with dropout ``drop``), L2-normalized."""
        model.drop = drop  # type: ignore[assignment]
        model.generator = generator  # type: ignore[assignment]
        image = torch.from_numpy(x[None].astype(np.float32)).requires_grad_(True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one image through a small CNN: more threads only contend
        try:
            with torch.enable_grad():
                logits = model(image)
                outputs = torch.from_numpy(logit_grad[None].astype(np.float32))
                (grad,) = torch.autograd.grad(logits, [image], grad_outputs=[outputs])
        finally:
            torch.set_num_threads(threads)
        direction = grad[0].numpy().astype(np.float64)
        return direction / _norm(direction)

    def _project(self, x0: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self.norm == "l2":
            delta = x - x0
            size = _norm(delta)
            if size > self.epsilon:
                x = x0 + self.epsilon * delta / size
        else:
            x = x0 + np.clip(x - x0, -self.epsilon, self.epsilon)
        return np.clip(x, 0.0, 1.0).astype(np.float32)

    # -- the attack --------------------------------------------------------------------------------

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        models = self.references(oracle.input_shape, oracle.num_classes)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x0 = oracle.x0
        probs = oracle.scores(x0[None])[0]
        if top_is_adversarial(probs, oracle):
            oracle.report(x0)
            return
        logits = self._logits(probs)
        oracle.not_counted_by_reference(1)
        prior = np.zeros(x0.shape, np.float64)
        x = x0.copy()
        step = 0
        while True:
            _, model = models[int(rng.integers(len(models)))]
            direction = self._direction(
                model, x, self._logit_grad(logits, oracle), self.drop_at(step), generator
            )
            direction = direction / _norm(direction)
            # finite differences along the reference direction (2 queries)
            q1 = prior + self.exploration * direction
            q2 = prior - self.exploration * direction
            probes = np.clip(
                np.stack([x + self.fd_eta * q1 / _norm(q1), x + self.fd_eta * q2 / _norm(q2)]),
                0.0,
                1.0,
            )
            answers = oracle.scores(probes.astype(np.float32))
            if probe_success(oracle, x, probes, answers, lambda p: self._in_ball(x0, p)):
                return
            probe_logits = self._logits(answers)
            l1, l2 = self._loss(probe_logits, oracle)
            grad = (l1 - l2) / (self.fd_eta * self.exploration) * direction
            if self.prior_update == "momentum":
                prior = prior + self.prior_lr * grad / _norm(grad, p=1)
            else:
                prior = prior + self.prior_lr * grad
            # image step along the prior, projected; checked by the next step's probes
            if self.norm == "l2":
                x = x + self.step_size * prior / _norm(prior)
            else:
                x = x + self.step_size * np.sign(prior)
            x = self._project(x0, x)
            logits = probe_logits.mean(0)
            step += 1

    def _in_ball(self, x0: np.ndarray, x: np.ndarray) -> bool:
        delta = x - x0
        size = _norm(delta) if self.norm == "l2" else float(np.abs(delta).max())
        return size <= self.epsilon * (1 + 1e-6)


__all__ = ["NoReferenceModel", "SubspaceAttack"]
