"""Model zoo: architectures, normalization and the registry by name."""

from service.models.registry import ZOO, ModelSpec, WeightsError, get_spec

__all__ = ["ZOO", "ModelSpec", "WeightsError", "get_spec"]
