"""Experiment configuration: attacks x endpoints x images x budget checkpoints, from TOML.

```toml
name = "embedded"
images = 50                 # correctly classified test images, sampled with `seed`
seed = 0
budget = 10000
checkpoints = [1000, 2000, 5000, 10000]
epsilons = [1.0, 1.5, 2.0]
primary_epsilon = 1.5
eval_draws = 10             # majority of this many evaluator draws decides "misclassified"
dataset = "embedded"        # or a local CIFAR-10 batch directory, or an .npz file

[[endpoints]]
name = "none"
url = "http://127.0.0.1:8000"   # or: serve = { defense = "none" } to start one locally
                                # or: url_env = "UNDEFENDED_URL" (read from the environment)
model = "resnet20-mnist"
api_key_env = "ATTACKER_KEY"    # attacker identity; eval_api_key_env for the evaluator
# pmis_reference = "pgdat"      # whose answers are h(x) for this endpoint's P_mis (default:
                                # the reference endpoint; set it for a model behind SND)

# Or one local server for every endpoint without url/serve (endpoints pick its models):
# [serve]
# workers = 2                   # server processes (uvicorn workers); the rest are SND_ settings
# models = [{ name = "none", zoo = "resnet20-mnist", defense = { kind = "none" } }, ...]

[[attacks]]
name = "hsja"
repeat = 1                       # T of the adaptive attack
params = { max_iter = 64 }

[[attacks]]
name = "square"
label = "square-linf (eps=0.1)"
norm = "linf"                    # judged by L∞ distance at the experiment's linf_epsilons
params = { norm = "inf", epsilon = 0.1 }
```
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks_client.attacks import ATTACKS
from attacks_client.data import STARTS


@dataclass(frozen=True)
class EndpointConfig:
    """One defended (or undefended) service the grid attacks."""

    name: str
    url: str | None = None
    model: str | None = None
    api_key: str | None = None
    eval_api_key: str | None = None
    serve: dict[str, Any] | None = None
    reference: bool = False
    eval_model: str | None = None
    """The model the evaluator asks (default: ``model``): e.g. the same network and defense
    without stateful detection, so that the judge's repeated draws are not flagged."""
    # the endpoint whose answers are h(x) for this one's P_mis (default: the reference); e.g.
    # the adversarially trained model for the same model behind SND
    pmis_reference: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EndpointConfig:
        raw = dict(raw)
        if "url" in raw and "url_env" in raw:
            raise ValueError(f"endpoint {raw.get('name')!r} takes 'url' or 'url_env', not both")
        for key in ("url", "api_key", "eval_api_key"):
            env = raw.pop(key + "_env", None)
            if env is not None:
                if env not in os.environ:
                    raise ValueError(f"endpoint {raw.get('name')!r}: ${env} is not set")
                raw[key] = os.environ[env]
        endpoint = cls(**raw)
        if endpoint.url is not None and endpoint.serve is not None:
            raise ValueError(f"endpoint {endpoint.name!r} takes 'url' or 'serve', not both")
        return endpoint


def searched_norm(name: str, params: dict[str, Any]) -> str:
    """The ball the attack searches with these params, ``l2`` or ``linf``: its ``norm``
    hyperparameter where it has one (Square's default is L2, RayS's L∞), else L2."""
    norm = str(getattr(ATTACKS[name](**params), "norm", "2")).lower()
    return "linf" if norm in ("inf", "linf") else "l2"


@dataclass(frozen=True)
class AttackConfig:
    """One attack of the grid; ``repeat`` > 1 makes it the adaptive (expectation) attack."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1
    label: str | None = None
    endpoints: tuple[str, ...] | None = None
    images: int | None = None
    """Attack only the first ``images`` of the experiment's images (``None``: all of them)."""
    norm: str = "l2"
    """The distance the row is judged in: ``l2`` (at ``epsilons``) or ``linf`` (at
    ``linf_epsilons``)."""
    start: str | None = None
    """``"other-class"``: offer the attack a natural start, a test image of another class
    (:func:`~attacks_client.data.other_class_start`; PopSkipJump's experiments)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AttackConfig:
        raw = dict(raw)
        if raw.get("name") not in ATTACKS:
            known = ", ".join(ATTACKS)
            raise ValueError(f"unknown attack {raw.get('name')!r}; known: {known}")
        if "endpoints" in raw:
            raw["endpoints"] = tuple(raw["endpoints"])
        attack = cls(**raw)
        if attack.repeat < 1:
            raise ValueError("repeat must be >= 1")
        if attack.norm not in ("l2", "linf"):
            raise ValueError(f"attack {attack.key!r}: norm must be 'l2' or 'linf'")
        searches_linf = searched_norm(attack.name, attack.params) == "linf"
        if searches_linf != (attack.norm == "linf"):
            raise ValueError(
                f"attack {attack.key!r} searches an {'L∞' if searches_linf else 'L2'} ball but "
                f"is judged in {attack.norm}: set norm = "
                f'"{"linf" if searches_linf else "l2"}" on the row'
            )
        if attack.start is not None and attack.start not in STARTS:
            raise ValueError(f"attack {attack.key!r}: start must be one of {', '.join(STARTS)}")
        if attack.images is not None and attack.images < 1:
            raise ValueError("an attack's images must be >= 1")
        return attack

    @property
    def key(self) -> str:
        """The attack's name in records and tables: ``hsja``, ``hsja (T=5)``."""
        if self.label:
            return self.label
        return self.name if self.repeat == 1 else f"{self.name} (T={self.repeat})"

    def runs_on(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints


@dataclass(frozen=True)
class Experiment:
    name: str
    endpoints: tuple[EndpointConfig, ...]
    attacks: tuple[AttackConfig, ...]
    images: int = 20
    seed: int = 0
    budget: int = 10000
    checkpoints: tuple[int, ...] = (1000, 2000, 5000, 10000)
    epsilons: tuple[float, ...] = (1.0, 1.5, 2.0)
    primary_epsilon: float = 1.5
    linf_epsilons: tuple[float, ...] = (0.1, 0.2, 0.3)
    """Radii of the rows judged in L∞ (``norm = "linf"``; MNIST's usual radii)."""
    eval_draws: int = 10
    dataset: str = "embedded"
    accuracy_repeats: int = 5
    accuracy_images: int | None = None
    pmis_samples: int = 200
    sigma_hat_images: int = 100
    sigma_hat_draws: int = 100
    serve: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Experiment:
        raw = dict(raw)
        endpoints = tuple(EndpointConfig.from_dict(e) for e in raw.pop("endpoints", []))
        attacks = tuple(AttackConfig.from_dict(a) for a in raw.pop("attacks", []))
        for key in ("checkpoints", "epsilons", "linf_epsilons"):
            if key in raw:
                raw[key] = tuple(raw[key])
        experiment = cls(endpoints=endpoints, attacks=attacks, **raw)
        experiment.check()
        return experiment

    @classmethod
    def load(cls, path: str | Path) -> Experiment:
        with Path(path).open("rb") as fh:
            raw = tomllib.load(fh)
        raw.setdefault("name", Path(path).stem)
        return cls.from_dict(raw)

    def check(self) -> None:
        if not self.endpoints or not self.attacks:
            raise ValueError("an experiment needs at least one endpoint and one attack")
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError("endpoint names must be unique")
        by_key: dict[str, list[AttackConfig]] = {}
        for attack in self.attacks:
            by_key.setdefault(attack.key, []).append(attack)
        for group in by_key.values():
            # one attack may be split over disjoint endpoint sets (e.g. fewer images on some)
            if len(group) > 1 and not _split_attack(group):
                raise ValueError("attacks must have unique labels (set 'label')")
        if self.images < 1 or self.budget < 1 or self.eval_draws < 1:
            raise ValueError("images, budget and eval_draws must be >= 1")
        if self.primary_epsilon not in self.epsilons:
            raise ValueError("primary_epsilon must be one of epsilons")
        for attack in self.attacks:
            unknown = sorted(set(attack.endpoints or ()) - set(names))
            if unknown:
                raise ValueError(
                    f"attack {attack.key!r} names unknown endpoints: {', '.join(unknown)}"
                )
        for endpoint in self.endpoints:
            if endpoint.pmis_reference is not None and endpoint.pmis_reference not in names:
                raise ValueError(
                    f"endpoint {endpoint.name!r}: pmis_reference "
                    f"{endpoint.pmis_reference!r} is not an endpoint"
                )
            if endpoint.url is None and endpoint.serve is None and self.serve is None:
                raise ValueError(
                    f"endpoint {endpoint.name!r} needs 'url' or 'serve' (or a "
                    "top-level [serve] table for one shared local server)"
                )

    @property
    def budget_checkpoints(self) -> tuple[int, ...]:
        """The checkpoints within the budget, and the budget itself."""
        points = sorted({q for q in self.checkpoints if q <= self.budget} | {self.budget})
        return tuple(points)

    def pmis_reference_of(self, endpoint: EndpointConfig) -> EndpointConfig:
        """The endpoint answering h(x) for ``endpoint``'s P_mis."""
        if endpoint.pmis_reference is None:
            return self.reference
        return next(e for e in self.endpoints if e.name == endpoint.pmis_reference)

    @property
    def reference(self) -> EndpointConfig:
        """The clean endpoint: picks the images and answers h(x) for P_mis."""
        flagged = [e for e in self.endpoints if e.reference]
        return flagged[0] if flagged else self.endpoints[0]


def _split_attack(group: list[AttackConfig]) -> bool:
    """The entries are one attack (same name, params, repeat) on disjoint endpoint sets."""
    first = group[0]
    if any(
        (a.name, a.params, a.repeat, a.norm) != (first.name, first.params, first.repeat, first.norm)
        or a.endpoints is None
        for a in group
    ):
        return False
    seen: set[str] = set()
    for attack in group:
        assert attack.endpoints is not None
        if seen & set(attack.endpoints):
            return False
        seen |= set(attack.endpoints)
    return True
