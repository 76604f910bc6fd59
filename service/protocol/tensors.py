"""What every protocol decodes to and the pipeline checks: a float32 batch ``(N, C, H, W)`` of
pixels in [0, 1], and the output mode (scores or only the top-1 label).

The JSON number rule is here once for both JSON encodings (``/predict``'s nested ``inputs``
and the Open Inference Protocol's ``data``): numbers only, never booleans, strings or null,
which numpy would quietly coerce."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from service.errors import ApiError

OutputMode = Literal["scores", "label"]
OUTPUT_MODES: tuple[OutputMode, ...] = ("scores", "label")


class NotNumbers(ValueError):
    """JSON tensor data holds something other than numbers (booleans, strings, null)."""


class OutOfRange(ValueError):
    """A JSON integer too large for any float."""


def json_numbers(values: list[Any], dtype: np.dtype[Any] | type = np.float32) -> np.ndarray:
    """Flat JSON scalars as a 1-D array of ``dtype``; :class:`NotNumbers` for a boolean, string
    or null, :class:`OutOfRange` for an integer beyond float64 (each protocol gives its status)."""
    if not all(type(v) in (int, float) for v in values):
        raise NotNumbers("data must be numbers (not booleans, strings or null)")
    try:
        return np.asarray(values, dtype=np.float64).astype(dtype)
    except OverflowError:
        raise OutOfRange("pixel values must lie in [0, 1]") from None


def invalid(message: str, code: str = "invalid_input") -> ApiError:
    return ApiError(422, code, message)


def parse_output(value: Any) -> OutputMode | None:
    """The requested output mode; None means the model's default (scores unless label-only)."""
    if value is None:
        return None
    if value not in OUTPUT_MODES:
        raise invalid(f"output must be one of {', '.join(OUTPUT_MODES)}", "unknown_output")
    return value  # type: ignore[no-any-return]


def validate_images(
    images: np.ndarray, input_shape: tuple[int, int, int], max_batch: int
) -> np.ndarray:
    """Check rank, size, shape, finiteness and range; return a C-contiguous float32 batch."""
    if images.ndim != 4:
        raise invalid(f"inputs must have rank 4 (N, C, H, W), got rank {images.ndim}", "bad_rank")
    n = images.shape[0]
    if n == 0:
        raise invalid("empty batch", "empty_batch")
    if n > max_batch:
        raise ApiError(413, "batch_too_large", f"batch of {n} images exceeds the limit {max_batch}")
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise invalid(
            f"image shape {tuple(images.shape[1:])} does not match the model's {input_shape} "
            "(C, H, W)",
            "bad_shape",
        )
    if not np.isfinite(images).all():
        raise invalid("inputs contain NaN or infinity", "non_finite")
    if images.min() < 0.0 or images.max() > 1.0:
        raise invalid("pixel values must lie in [0, 1]", "out_of_range")
    return np.ascontiguousarray(images, dtype=np.float32)
