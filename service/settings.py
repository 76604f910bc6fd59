"""One pydantic-settings ``Settings`` for the service (environment prefix ``SND_``).

A single model is configured with the flat fields (``SND_MODEL``, ``SND_DEFENSE``,
``SND_SIGMA``, ...); several models with ``SND_MODELS`` as a JSON list of
:class:`ModelSettings`. Nested fields use ``__`` (``SND_MODELS='[{"name": ...}]'``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.accounting.base import MAX_BUDGET
from service.detection import defaults
from service.model_settings import DefenseKind, DefenseSettings, DetectionSettings, ModelSettings

# the one-model flags, ignored when ``models`` is given
FLAT_MODEL_FIELDS = frozenset(
    {
        "model",
        "weights",
        "defense",
        "sigma",
        "noise",
        "sigma_distribution",
        "alpha",
        "beta",
        "clip",
        "label_only",
        "hide_defense_params",
        "detection",
    }
)


def _is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower())


class Settings(BaseSettings):
    """Everything the service reads from flags and ``SND_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="SND_", env_nested_delimiter="__", extra="ignore", protected_namespaces=()
    )

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    # single-model shortcut (used when `models` is empty)
    model: str = "resnet20-mnist"
    weights: Path | None = None
    defense: DefenseKind = "snd"
    sigma: float = Field(0.01, ge=0.0, le=1.0)
    noise: Literal["gaussian", "uniform", "laplace", "salt_pepper"] = "gaussian"
    sigma_distribution: Literal["fixed", "beta"] = "fixed"
    alpha: float = Field(1.0, gt=0.0)
    beta: float = Field(1.0, gt=0.0)
    clip: bool = False
    label_only: bool = False
    hide_defense_params: bool = False
    detection: Literal["off", "shadow", "enforce"] = "off"
    models: list[ModelSettings] = Field(default_factory=list)

    # inference
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(0, ge=0, description="intra-op threads; 0 = all cores")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="autocast the model (fp16: CUDA only); noise stays fp32"
    )
    graph: Literal["eager", "trace"] = Field(
        "trace", description="trace and freeze deterministic fp32 networks (GIL-free forward)"
    )
    forward_chunk_images: int = Field(
        32, ge=0, description="CPU passes run in chunks of this many images; 0 = whole batch"
    )
    allow_download: bool = Field(False, description="let torchvision download missing weights")
    max_batch: int = Field(256, ge=1, description="most images in one request")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    batching: bool = Field(True, description="merge concurrent requests into shared passes")
    batch_max_images: int = Field(256, ge=1, description="most images in one forward pass")
    batch_wait_ms: float = Field(
        0.0, ge=0.0, description="how long a pass waits for company; 0 = run what is queued"
    )
    queue_max_images: int = Field(4096, ge=1, description="queued images before 503")
    request_timeout_s: float = Field(
        30.0, gt=0.0, description="longest wait for a model answer before 504 (refunded)"
    )

    # accounting and auth
    redis_url: str | None = Field(
        None, description="redis://... (cluster: any node's); unset = in-memory counter"
    )
    redis_mode: Literal["standalone", "sentinel", "cluster"] = Field(
        "standalone", description="one Redis, a Sentinel-managed primary, or a Redis Cluster"
    )
    redis_sentinels: list[str] = Field(
        default_factory=list, description="sentinel mode: the Sentinels' host:port addresses"
    )
    redis_master_name: str = Field("mymaster", description="sentinel mode: the master's name")
    redis_prefix: str = Field("snd:", description="prefix of every accounting key")
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        description="answer only once this many replicas hold the charge (WAIT; standalone "
        "and sentinel): a failover then loses no answered charge",
    )
    redis_timeout_s: float = Field(
        0.5, gt=0.0, description="connect and operation timeout of Redis calls (seconds)"
    )
    redis_wait_timeout_ms: int = Field(
        200, ge=1, description="with redis_wait_replicas: longest WAIT before the call fails"
    )
    redis_token_ttl_s: int = Field(
        30, ge=1, description="how long an idempotency token (charge, refund, detection) is kept"
    )
    redis_sentinel_check_s: float = Field(
        0.25, gt=0.0, description="sentinel mode: how often the Sentinels are asked for the primary"
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict, description="sha256(key) hex -> caller name; empty = open"
    )
    admin_token_sha256: str | None = None
    budgets: dict[str, int] = Field(
        default_factory=dict,
        description="caller -> query budget; keys are caller ids (key:NAME, addr:IP) or bare names",
    )
    default_budget: int | None = Field(None, ge=0, le=MAX_BUDGET)
    fail_open: bool = Field(False, description="answer uncounted when the counter is down")
    trusted_proxies: list[str] = Field(default_factory=list)
    retry_after_s: int = Field(1, ge=1)

    # stateful detection: the secret and the per-caller escalation (models choose the action)
    detection_secret: SecretStr | None = Field(
        None, description="keys the fingerprints and salt; set it so state survives restarts"
    )
    detection_retention_s: float = Field(
        defaults.RETENTION_S, gt=0.0, description="fingerprints kept"
    )
    detection_ids_per_key: int = Field(
        defaults.IDS_PER_KEY, ge=1, description="recent queries kept per hash"
    )
    detection_flag_window_s: float = Field(
        defaults.FLAG_WINDOW_S, gt=0.0, description="escalation window W"
    )
    detection_throttle_after: int = Field(
        defaults.THROTTLE_AFTER, ge=1, description="flags in W that throttle"
    )
    detection_suspend_after: int = Field(
        defaults.SUSPEND_AFTER, ge=1, description="flags in W that suspend"
    )
    detection_throttle_s: float = Field(
        defaults.THROTTLE_S, gt=0.0, description="length of a throttle"
    )
    detection_cross_caller: bool = Field(
        False,
        description="also index near-duplicates across callers (shadow: counted as "
        "cross_caller flags, never acted on); finds an attack split over many keys",
    )

    @field_validator("api_keys")
    @classmethod
    def _hashes_are_sha256(cls, value: dict[str, str]) -> dict[str, str]:
        for digest in value:
            if not _is_sha256_hex(digest):
                raise ValueError("api_keys must map sha256 hex digests to caller names")
        return {digest.lower(): name for digest, name in value.items()}

    @field_validator("admin_token_sha256")
    @classmethod
    def _admin_hash_is_sha256(cls, value: str | None) -> str | None:
        if value is not None and not _is_sha256_hex(value):
            raise ValueError("admin_token_sha256 must be the sha256 hex digest (64 hex digits)")
        return None if value is None else value.lower()

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or CIDR network"
                ) from None
        return networks

    @model_validator(mode="after")
    def _batch_fits_the_queue(self) -> Settings:
        if self.max_batch > self.queue_max_images:
            raise ValueError(
                f"max_batch ({self.max_batch}) must not exceed queue_max_images "
                f"({self.queue_max_images}): a full request could never be queued"
            )
        return self

    def detection_needs_a_secret(self, workers: int = 1) -> str | None:
        """Why this server needs ``detection_secret`` and lacks it, else ``None``: without it
        each process fingerprints with its own random key, so matches never cross processes
        (several workers) and state kept in Redis is unreadable after a restart."""
        if self.detection_secret is not None:
            return None
        if all(m.detection.action == "off" for m in self.models):
            return None
        if self.redis_url or self.redis_mode == "sentinel":
            return "detection state is kept in Redis: set detection_secret (SND_DETECTION_SECRET)"
        if workers > 1:
            return (
                f"{workers} workers detect: set detection_secret (SND_DETECTION_SECRET) so "
                "their fingerprints match across workers"
            )
        return None

    @model_validator(mode="after")
    def _throttle_before_suspend(self) -> Settings:
        if self.detection_throttle_after >= self.detection_suspend_after:
            raise ValueError(
                "detection_throttle_after must be below detection_suspend_after "
                f"({self.detection_throttle_after} >= {self.detection_suspend_after})"
            )
        return self

    @field_validator("budgets")
    @classmethod
    def _budgets_not_negative(cls, value: dict[str, int]) -> dict[str, int]:
        if any(not 0 <= budget <= MAX_BUDGET for budget in value.values()):
            raise ValueError(f"budgets must be in [0, {MAX_BUDGET}]")
        return value

    @model_validator(mode="after")
    def _check_redis(self) -> Settings:
        if self.redis_mode == "sentinel" and not self.redis_sentinels:
            raise ValueError("redis_mode=sentinel needs redis_sentinels (host:port, ...)")
        if self.redis_mode == "cluster" and self.redis_wait_replicas:
            raise ValueError("redis_wait_replicas is for standalone and sentinel modes")
        if self.redis_mode == "cluster" and not self.redis_url:
            raise ValueError("redis_mode=cluster needs redis_url (any node of the cluster)")
        return self

    @model_validator(mode="after")
    def _fill_models(self) -> Settings:
        flat = sorted(FLAT_MODEL_FIELDS & self.model_fields_set)
        if self.models and flat:
            given = ", ".join("SND_" + name.upper() for name in flat)
            raise ValueError(
                f"models (SND_MODELS) lists the served models; {given} would be ignored: set "
                "them per model in models instead"
            )
        if not self.models:
            self.models = [
                ModelSettings(
                    name=self.model,
                    weights=self.weights,
                    defense=DefenseSettings(
                        kind=self.defense,
                        sigma=self.sigma,
                        noise=self.noise,
                        distribution=self.sigma_distribution,
                        alpha=self.alpha,
                        beta=self.beta,
                        clip=self.clip,
                    ),
                    label_only=self.label_only,
                    hide_defense_params=self.hide_defense_params,
                    detection=DetectionSettings(action=self.detection),
                )
            ]
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        return self

    @model_validator(mode="after")
    def _detection_secret_where_shared(self) -> Settings:
        problem = self.detection_needs_a_secret()
        if problem:
            raise ValueError(problem)
        return self

    @property
    def default_model(self) -> str:
        return self.models[0].name

    def budget_for(self, caller: str) -> int | None:
        """The configured budget of a caller id: by full id, then by bare name, then default."""
        if caller in self.budgets:
            return self.budgets[caller]
        name = caller.split(":", 1)[-1]
        return self.budgets.get(name, self.default_budget)
