"""SimBA and SimBA-DCT: the Simple Black-box Attack (score-based, local search).

Chuan Guo, Jacob R. Gardner, Yurong You, Andrew G. Wilson, Kilian Q. Weinberger. "Simple
Black-box Adversarial Attacks", ICML 2019 (arXiv:1905.07121). Ported from the authors' code,
https://github.com/cg563/simple-blackbox-attack (``simba.py``: ``simba_single`` /
``simba_batch``; ``utils.py``: ``block_order``), as the SND paper did (its App. B.1).

Each iteration takes the next basis vector q of a random order (pixels for SimBA, 2-D DCT
coefficients for SimBA-DCT) and tries ``x - eps*q``, then ``x + eps*q`` (only when the first did
not help), keeping the first that lowers the probability of the true class (raises that of the
target class). Every probe is one query; the image's label comes with the probe's scores
(argmax), so the reference's per-iteration ``get_preds`` success check needs no query of its own
here: a probe the endpoint already classifies as adversarial is reported and ends the attack.

Counting differs from the reference only where it undercounts: the first query of ``x0`` is
counted (the records also carry the reference's count, without it), and the success checks cost
nothing because they reuse the probes' answers (docs/attacking/protocol.md, "Counting
queries").

Numerics: "lower probability of the true class" is compared as "higher total probability of
all other classes" — the same order, since the scores sum to 1, but it keeps its resolution when
a confident model answers ``p_y`` within one float32 step of 1.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from attacks_client.attacks.base import Attack, AttackOracle
from attacks_client.attacks.dct import idct2

# the SND paper's SimBA-DCT setting (App. B.1) for 224 x 224 ImageNet images
PAPER_IMAGE_SIZE, PAPER_FREQ_DIMS, PAPER_STRIDE = 224, 28, 7


def block_order(
    image_size: int,
    channels: int,
    initial_size: int = 1,
    stride: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The reference's ``block_order``: a permutation of the ``channels * image_size**2``
    coefficient indices (C, H, W order) that starts with the top-left ``initial_size`` square
    and grows it by ``stride`` rows and columns whenever it is exhausted, random within each
    band and across channels. Valid only when ``(image_size - initial_size) % stride == 0``.
    """
    if not 1 <= initial_size <= image_size or stride < 1:
        raise ValueError(
            f"need 1 <= initial_size <= image_size and stride >= 1, "
            f"got initial_size={initial_size}, stride={stride}"
        )
    if (image_size - initial_size) % stride:
        raise ValueError(
            f"the block order of a {image_size}-pixel image needs (image_size - "
            f"freq_dims) divisible by stride; got freq_dims={initial_size}, "
            f"stride={stride}"
        )
    rng = rng if rng is not None else np.random.default_rng()
    order = np.zeros((channels, image_size, image_size), np.int64)
    total = channels * initial_size * initial_size
    order[:, :initial_size, :initial_size] = rng.permutation(total).reshape(
        channels, initial_size, initial_size
    )
    for i in range(initial_size, image_size, stride):
        count = channels * (2 * stride * i + stride * stride)
        perm = rng.permutation(count) + total
        first = channels * stride * (stride + i)
        order[:, : i + stride, i : i + stride] = perm[:first].reshape(channels, -1, stride)
        order[:, i : i + stride, :i] = perm[first:].reshape(channels, stride, -1)
        total += count
    return np.argsort(order.ravel(), kind="stable")


def scaled_block_params(image_size: int) -> tuple[int, int]:
    """``(freq_dims, stride)`` of the paper's 224-px setting (28, 7) scaled to ``image_size``
    and made valid for :func:`block_order`: 28 px -> (4, 1), 32 px -> (4, 1), 224 px -> (28, 7).
    """
    freq_dims = min(image_size, max(1, round(image_size * PAPER_FREQ_DIMS / PAPER_IMAGE_SIZE)))
    stride = max(1, round(image_size * PAPER_STRIDE / PAPER_IMAGE_SIZE))
    while (image_size - freq_dims) % stride:
        stride -= 1
    return freq_dims, stride


class SimBA(Attack):
    """SimBA in the pixel basis (the reference's ``--pixel_attack``, random order).

    Args:
        step_size: the reference's ``epsilon`` (0.2): the change of one coordinate per step.
        max_passes: how often to walk through the whole basis. The reference stops after one
            pass (``max_iters = n_dims``); on small images (784 pixels) that ends long before a
            10k budget, so later passes (fresh random orders) are opt-in.
    """

    name: ClassVar[str] = "simba"
    needs_scores: ClassVar[bool] = True

    def __init__(self, step_size: float = 0.2, max_passes: int = 1) -> None:
        if step_size <= 0:
            raise ValueError("step_size must be > 0")
        if max_passes < 1:
            raise ValueError("max_passes must be >= 1")
        self.step_size = step_size
        self.max_passes = max_passes

    # the basis: overridden by SimBA-DCT
    def _order(self, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(int(np.prod(shape)))

    def _to_image(self, coefficients: np.ndarray) -> np.ndarray:
        return coefficients

    def _objective(self, probs: np.ndarray, oracle: AttackOracle) -> float:
        """The value SimBA drives down: -P(other classes) (untargeted), -P(target) (targeted)."""
        p = probs.astype(np.float64)
        if oracle.target is not None:
            return -float(p[oracle.target])
        return -float(p.sum() - p[oracle.label])

    @staticmethod
    def _adversarial(probs: np.ndarray, oracle: AttackOracle) -> bool:
        top = int(np.argmax(probs))
        return top == oracle.target if oracle.target is not None else top != oracle.label

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        x0, shape = oracle.x0, oracle.input_shape
        probs = oracle.scores(x0[None])[0]
        oracle.not_counted_by_reference(1)
        if self._adversarial(probs, oracle):
            oracle.report(x0)
            return
        last = self._objective(probs, oracle)
        delta = np.zeros(int(np.prod(shape)), np.float32)
        for _ in range(self.max_passes):
            for dim in self._order(shape, rng):
                for sign in (-1.0, 1.0):
                    trial = delta.copy()
                    trial[dim] += sign * self.step_size
                    x = np.clip(x0 + self._to_image(trial.reshape(shape)), 0.0, 1.0)
                    probs = oracle.scores(x[None])[0]
                    if self._adversarial(probs, oracle):
                        oracle.report(x)
                        return
                    value = self._objective(probs, oracle)
                    if value < last:
                        delta, last = trial, value
                        break


class SimBADCT(SimBA):
    """SimBA-DCT: SimBA in the orthonormal 2-D DCT basis of the whole image, low frequencies
    first (the reference's ``--order strided``).

    The SND paper (App. B.1) runs ``freq_dims=28, order=strided, stride=7`` at 224 px:
    coefficients of the top-left 28 x 28 block (all channels) in random order, then bands of 7
    more rows/columns. The reference's ``block_order(image_size, channels,
    initial_size=freq_dims, stride)`` only tiles the image when ``(image_size - freq_dims)`` is
    a multiple of ``stride``; scaled by image size (1/8 and 1/32 of the side), 28 px and 32 px
    give ``freq_dims=4, stride=1`` (3.5 rounded, and 0.875 -> 1), which is valid. ``None``
    takes these scaled values; explicit values are checked.

    Args:
        step_size: the reference's ``epsilon`` (0.2), in DCT coefficients (orthonormal: the
            same L2 step as in pixels).
        freq_dims: side of the first low-frequency block (``None``: scaled from 28 @ 224 px).
        stride: band width of the strided order (``None``: scaled from 7 @ 224 px).
        order: ``"strided"`` (paper) or ``"rand"`` (random order within the
            ``freq_dims`` x ``freq_dims`` block only, the reference's default).
        max_passes: as for :class:`SimBA`.
    """

    name: ClassVar[str] = "simba-dct"

    def __init__(
        self,
        step_size: float = 0.2,
        freq_dims: int | None = None,
        stride: int | None = None,
        order: Literal["strided", "rand"] = "strided",
        max_passes: int = 1,
    ) -> None:
        super().__init__(step_size, max_passes)
        if order not in ("strided", "rand"):
            raise ValueError("order must be 'strided' or 'rand'")
        self.freq_dims = freq_dims
        self.stride = stride
        self.order = order

    def block_params(self, image_size: int) -> tuple[int, int]:
        """``(freq_dims, stride)`` used for an image of side ``image_size``."""
        freq_dims, stride = scaled_block_params(image_size)
        return (
            freq_dims if self.freq_dims is None else self.freq_dims,
            stride if self.stride is None else self.stride,
        )

    def _order(self, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
        channels, height, width = shape
        if height != width:
            raise ValueError(f"SimBA-DCT needs square images, got {height} x {width}")
        freq_dims, stride = self.block_params(height)
        if self.order == "strided":
            return block_order(height, channels, freq_dims, stride, rng)
        if not 1 <= freq_dims <= height:
            raise ValueError(f"freq_dims must lie in [1, {height}], got {freq_dims}")
        c, i, j = np.unravel_index(
            rng.permutation(channels * freq_dims**2), (channels, freq_dims, freq_dims)
        )
        return np.asarray(np.ravel_multi_index((c, i, j), shape))

    def _to_image(self, coefficients: np.ndarray) -> np.ndarray:
        return idct2(coefficients).astype(np.float32)


__all__ = ["SimBA", "SimBADCT", "block_order", "scaled_block_params"]
