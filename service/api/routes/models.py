"""``GET /models``: what is served, and behind which defense."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import RuntimeDep
from service.errors import ApiError

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    name: str
    architecture: str
    input_shape: list[int]
    num_classes: int
    classes: list[str]
    defense: dict[str, Any]
    outputs: list[str]
    default: bool


class ModelList(BaseModel):
    models: list[ModelInfo]


@router.get("/models", response_model=ModelList, summary="Served models and their defenses")
async def list_models(runtime: RuntimeDep) -> ModelList:
    """Every model whose shapes are known (a proxied model once its upstream has answered)."""
    pool = runtime.pool
    listed = []
    for host in pool.hosts.values():
        try:
            spec = host.signature
        except ApiError:
            continue
        listed.append(
            ModelInfo(
                name=host.name,
                architecture=spec.architecture,
                input_shape=list(spec.input_shape),
                num_classes=spec.num_classes,
                classes=list(spec.classes),
                defense=host.defense.describe(hide_params=host.settings.hide_defense_params),
                outputs=list(host.output_modes),
                default=host.name == pool.default,
            )
        )
    return ModelList(models=listed)
