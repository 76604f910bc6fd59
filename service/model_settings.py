"""The settings of one served model: which network (a zoo entry, or an upstream Open Inference
Protocol server), the defense in front of it, its output policy and its stateful detection.
:class:`service.settings.Settings` holds a list of them (``SND_MODELS``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from service.detection import defaults

DefenseKind = Literal["none", "snd", "rp"]  # service.defenses.build_defense builds each


class DefenseSettings(BaseModel):
    """The defense in front of one model."""

    kind: DefenseKind = "snd"
    sigma: float = Field(0.01, ge=0.0, le=1.0, description="noise standard deviation (pixels)")
    noise: Literal["gaussian", "uniform", "laplace", "salt_pepper"] = "gaussian"
    sp_amplitude: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="salt_pepper: impulse ±a; density p = σ²/a², so the std stays σ (σ <= a)",
    )
    rp_min_scale: float = Field(1.0, ge=1.0, description="rp: smallest resize factor")
    rp_max_scale: float = Field(
        1.1, gt=1.0, le=4.0, description="rp: canvas side = round(max_scale · side) (Xie 2018)"
    )
    distribution: Literal["fixed", "beta"] = Field(
        "fixed", description="fixed σ, or σ scaled by k ~ Beta(α, β) per image (paper App. C)"
    )
    alpha: float = Field(1.0, gt=0.0)
    beta: float = Field(1.0, gt=0.0)
    clip: bool = Field(False, description="clip noisy images to [0, 1]")

    @model_validator(mode="after")
    def _check_ranges(self) -> DefenseSettings:
        if self.rp_min_scale >= self.rp_max_scale:
            raise ValueError("rp_min_scale must be < rp_max_scale")
        if self.noise == "salt_pepper" and self.sigma > self.sp_amplitude:
            raise ValueError("salt_pepper needs sigma <= sp_amplitude (density σ²/a² <= 1)")
        return self


class UpstreamSettings(BaseModel):
    """An existing Open Inference Protocol (KServe v2) server that answers for a model: the
    gateway validates, charges, adds the noise, forwards and answers (proxy mode)."""

    url: str = Field(description="the upstream's base URL, http://host:port[/prefix]")
    model: str = Field(min_length=1, description="the model's name on the upstream")
    version: str | None = Field(None, description="the upstream model version; none: default")
    binary: Literal["auto"] | bool = Field(
        "auto", description="binary tensor extension: auto = when the upstream lists it"
    )
    timeout_s: float = Field(10.0, gt=0.0, description="one upstream call; past it 504, refunded")
    outputs_are: Literal["logits", "probabilities"] = Field(
        "logits", description="what the upstream's output holds (logits get a softmax)"
    )
    output: str | None = Field(None, description="the upstream output to read; none: the first")
    max_batch: int = Field(
        64, ge=1, description="most images in one upstream call (1: never merge requests)"
    )
    concurrency: int = Field(4, ge=1, description="upstream calls in flight for this model")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < len("http://x"):
            raise ValueError("upstream url must be http://host:port or https://host:port")
        return value.rstrip("/")


LAYERS: tuple[Literal["exact", "near"], ...] = ("exact", "near")


class DetectionSettings(BaseModel):
    """Stateful detection in front of one model (``service.detection``)."""

    action: Literal["off", "shadow", "enforce"] = Field(
        "off", description="shadow: count flags only; enforce: hide flagged queries, escalate"
    )
    layers: list[Literal["exact", "near"]] = Field(default_factory=lambda: list(LAYERS))
    repeat_policy: Literal["cached", "fresh"] = Field(
        "cached", description="enforce: an exact repeat gets its first answer, or fresh noise"
    )
    repeat_allowance: int = Field(
        defaults.REPEAT_ALLOWANCE, ge=0, description="repeats of one image not flagged"
    )
    fingerprint: Literal["scaled", "reference"] = Field(
        "scaled",
        description="reference: Blacklight's own fingerprint (SHA-256, every window); scaled: "
        "fast keyed hash, blank windows skipped, window scaled to the input size",
    )
    window: int | None = Field(None, ge=2, description="values per window (default: by size)")
    keep: int = Field(defaults.KEEP, ge=1, description="hashes kept per query")
    quantization: int = Field(
        defaults.QUANTIZATION, ge=1, le=255, description="rounding step (0-255 scale)"
    )
    threshold: int = Field(
        defaults.THRESHOLD, ge=0, description="a match shares more than this many hashes"
    )
    visible_rejection: bool = Field(
        False, description="enforce: refuse a flagged request with 403 instead of hiding it"
    )


class ModelSettings(BaseModel):
    """One served model: a zoo entry (or an upstream server), its defense and output policy."""

    name: str = "resnet20-mnist"
    zoo: str | None = Field(None, description="zoo entry to serve under `name` (default: name)")
    weights: Path | None = Field(None, description="local weights file (default: packaged)")
    upstream: UpstreamSettings | None = Field(
        None, description="proxy mode: an OIP v2 server answers instead of a zoo network"
    )
    defense: DefenseSettings = Field(default_factory=DefenseSettings)
    label_only: bool = Field(False, description="never return scores (decision-based threat)")
    hide_defense_params: bool = Field(False, description="GET /models shows the kind only")
    detection: DetectionSettings = Field(default_factory=DetectionSettings)

    @model_validator(mode="after")
    def _zoo_or_upstream(self) -> ModelSettings:
        if self.upstream is not None:
            if self.zoo is not None or self.weights is not None:
                raise ValueError("a model has either a zoo network (zoo, weights) or an upstream")
            if self.defense.kind == "rp":
                raise ValueError("rp changes the image size, which an upstream model refuses")
        return self

    @property
    def zoo_name(self) -> str:
        return self.zoo or self.name
