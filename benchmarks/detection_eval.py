"""Stateful detection measured against the eight attacks through a real gateway, and benign
streams (``benchmarks.detection_benign``); raw results in ``docs/results/detection/``.

    python -m benchmarks.detection_eval --images 5 --shadow-budget 2000 --budget 10000
    python -m benchmarks.detection_report

One ``python -m service`` on a real Redis serves the embedded ResNet-20 six times: behind SND
σ = 0.01 and undefended, each with detection in ``shadow``, in ``enforce`` (defaults: exact +
near-duplicate layers, cached answers, throttle after 20 flags in an hour, suspend after 100)
and ``off`` (the evaluator's copy: judging a candidate ten times must not look like an attack).
Each run is one attack on one image, as a true black box over HTTP with the attacker's key; the
admin API forgets the attacker's detection state before each run and reads its flags after.
Shadow runs give the flags (first flag, share of queries flagged); enforce runs give success
at the budget (the attack ends when throttled or suspended). The attacker's client
fingerprints what it sends with the service's own code and secret, for the threshold plot.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.progress import Progress

from attacks_client import get_attack
from attacks_client.data import START_POOL, ImageSet, embedded_mnist, other_class_start
from attacks_client.evaluation.scoring import score_result, select_images
from attacks_client.oracles import HttpOracle, JitterOracle, Oracle, OracleWrapper, RepeatOracle
from benchmarks.detection_benign import SECRET, Overlap, benign_part, redis_bytes_per_query
from service.detection.blacklight import BlacklightFingerprint
from service.detection.detector import blacklight_params
from service.model_settings import DetectionSettings
from tests.servers import RedisProcess, ServiceProcess

log = logging.getLogger(__name__)
OUT = Path("docs/results/detection")
ATTACK_NAMES = [
    "boundary",
    "sign-opt",
    "hsja",
    "geoda",
    "simba",
    "simba-dct",
    "bandit-td",
    "subspace",
]
SIGMA = 0.01
EPSILON = 1.5
ADMIN = "measurement-admin"


@dataclass(frozen=True)
class Config:
    attack: str
    repeat: int = 1
    jitter: float = 0.0
    params: tuple[tuple[str, Any], ...] = ()
    start: str | None = None
    norm: str = "l2"
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [self.attack] + ([f"T={self.repeat}"] if self.repeat > 1 else [])
        return " ".join(parts + ([f"S={self.jitter:g}"] if self.jitter else []))


NOISE_AWARE = [
    Config(
        "square",
        params=(("norm", "2"), ("epsilon", EPSILON), ("confirm", 3)),
        name="square (confirm=3)",
    ),
    Config("popskipjump", start="other-class"),
    Config("rays", norm="linf", name="rays (L∞ 0.3)"),
    Config("rays", params=(("confirm", 5),), norm="linf", name="rays (confirm=5, L∞ 0.3)"),
]
"""The attacks SND fears most (docs/results.md): the adaptive Square, PopSkipJump from its
natural start, RayS plain and with a confirmed handover, judged in L∞ at ``LINF_EPSILON``."""
LINF_EPSILON = 0.3


def configs() -> list[Config]:
    out = [Config(a) for a in ATTACK_NAMES] + [Config("hsja", 5), Config("hsja", 10)]
    out += [Config("hsja", 5, k * SIGMA) for k in (0.25, 0.5, 1.0, 2.0)]
    return out + NOISE_AWARE


class Fingerprinting(OracleWrapper):
    """The attacker's own record of how near-duplicate its queries are, with the service's
    fingerprint and secret (what the server sees, since it sits below the jitter)."""

    def __init__(self, inner: Oracle) -> None:
        super().__init__(inner)
        shape = (1, 28, 28)
        self.layer = BlacklightFingerprint(
            SECRET, shape, blacklight_params(DetectionSettings(), shape)
        )
        self.overlap = Overlap()

    def _record(self, x: np.ndarray) -> None:
        for keys in self.layer.keys(np.asarray(x, np.float32)):
            self.overlap.add(keys)

    def labels(self, x: np.ndarray) -> np.ndarray:
        self._record(x)
        return self.inner.labels(x)

    def scores(self, x: np.ndarray) -> np.ndarray:
        self._record(x)
        return self.inner.scores(x)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Gateway:
    """The measured server: six models, an attacker's and an evaluator's key, an admin."""

    def __init__(self) -> None:
        models = []
        for defended in (True, False):
            defense = {"kind": "snd", "sigma": SIGMA} if defended else {"kind": "none"}
            for action in ("shadow", "enforce", "off"):
                models.append(
                    {
                        "name": self.model(defended, action),
                        "zoo": "resnet20-mnist",
                        "defense": defense,
                        "detection": {"action": action},
                    }
                )
        self.redis = RedisProcess()
        self.settings = {
            "models": models,
            "api_keys": {sha256("attacker-key"): "attacker", sha256("evaluator-key"): "evaluator"},
            "admin_token_sha256": sha256(ADMIN),
            "detection_secret": SECRET.decode(),
        }
        self.admin = {"Authorization": f"Bearer {ADMIN}"}

    @staticmethod
    def model(defended: bool, action: str) -> str:
        return f"{'snd' if defended else 'none'}-{action}"

    def __enter__(self) -> Gateway:
        self.redis.start()
        self.server = ServiceProcess({**self.settings, "redis_url": self.redis.url}).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.redis.stop()

    def oracle(self, model: str, output: str) -> HttpOracle:
        return HttpOracle(self.server.url, model, api_key="attacker-key", output=output)  # type: ignore[arg-type]

    def evaluator(self, defended: bool) -> HttpOracle:
        return HttpOracle(self.server.url, self.model(defended, "off"), api_key="evaluator-key")

    def forget(self) -> None:
        httpx.delete(f"{self.server.url}/detections/key:attacker", headers=self.admin, timeout=10)

    def flags(self, model: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.server.url}/detections/key:attacker", headers=self.admin, timeout=10
        )
        status = response.json()
        by_layer = status["flags"].get(model, {})
        return {
            "queries": status["queries"],
            "flagged": sum(by_layer.values()),
            "first_flag": status["first_flag_query"],
            "by_layer": by_layer,
            "state": status["state"],
        }


def run_config(
    gateway: Gateway,
    config: Config,
    defended: bool,
    action: str,
    budget: int,
    sample: Any,
    evaluator: Oracle,
    seed: int,
    start: np.ndarray | None = None,
) -> dict[str, Any]:
    attack = get_attack(config.attack)(**dict(config.params))
    model = gateway.model(defended, action)
    http = gateway.oracle(model, "scores" if attack.needs_scores else "label")
    gateway.forget()
    recorder = Fingerprinting(http)
    sent: Oracle = JitterOracle(recorder, config.jitter, seed=seed) if config.jitter else recorder
    oracle: Oracle = RepeatOracle(sent, config.repeat) if config.repeat > 1 else sent
    try:
        result = attack(oracle, sample.image, sample.label, budget, seed=seed, start=start)
    finally:
        http.close()
    epsilon = LINF_EPSILON if config.norm == "linf" else EPSILON
    record = score_result(result, sample, evaluator, [budget], [epsilon], 10, norm=config.norm)
    return {
        "queries_answered": http.queries,
        "stop_reason": result.stop_reason,
        "success": bool(record["success"][f"{epsilon:g}"][0]),
        "l2": record["l2"][0],
        "linf": record["linf"][0],
        "overlap": recorder.overlap.best,
        **(gateway.flags(model) if action != "off" else {}),
    }


def attacks_part(args: argparse.Namespace, chosen: list[Config]) -> list[dict[str, Any]]:
    data = embedded_mnist("test")
    rows = []
    plan = [(c, d) for d in (True, False) for c in chosen]
    with Gateway() as gateway, Progress() as progress:
        task = progress.add_task("attack runs", total=len(plan) * args.images)
        for defended in (True, False):
            evaluator = gateway.evaluator(defended)
            selected = select_images(data, max(args.images, START_POOL), args.seed, evaluator, 10)
            samples = selected[: args.images]
            pool = ImageSet(
                np.stack([s.image for s in selected[:START_POOL]]),
                np.array([s.label for s in selected[:START_POOL]]),
            )
            for config, _ in [p for p in plan if p[1] == defended]:
                for sample in samples:
                    seed = args.seed + sample.index
                    start = (
                        other_class_start(pool, sample.label)
                        if config.start == "other-class"
                        else None
                    )
                    runs = {
                        action: run_config(
                            gateway,
                            config,
                            defended,
                            action,
                            args.shadow_budget if action == "shadow" else args.budget,
                            sample,
                            evaluator,
                            seed,
                            start,
                        )
                        for action in ("shadow", "enforce")
                    }
                    rows.append(
                        {
                            "config": config.label,
                            "snd": defended,
                            "image": sample.index,
                            "overlap": runs["shadow"].pop("overlap"),
                            "shadow": runs["shadow"],
                            "enforce": {k: v for k, v in runs["enforce"].items() if k != "overlap"},
                        }
                    )
                    progress.advance(task)
            evaluator.close()
    return rows


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with the configurations measured in ``new`` replaced, ordered as the report
    reads them: SND first, then :func:`configs` order."""
    labels = {r["config"] for r in new}
    rank = {c.label: i for i, c in enumerate(configs())}
    rows = [r for r in old if r["config"] not in labels] + new
    return sorted(rows, key=lambda r: (not r["snd"], rank.get(r["config"], len(rank))))


BASELINES = [
    Config("hsja"),
    Config("hsja", 5),
    Config("hsja", 5, SIGMA),
    Config("hsja", 5, 2 * SIGMA),
]


def baseline_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Without detection: what the attacks reach against SND and no defense at the budget."""
    data = embedded_mnist("test")
    rows = []
    with Gateway() as gateway, Progress() as progress:
        task = progress.add_task("baselines", total=2 * len(BASELINES) * args.images)
        for defended in (True, False):
            evaluator = gateway.evaluator(defended)
            samples = select_images(data, args.images, args.seed, evaluator, 10)
            for config in BASELINES:
                for sample in samples:
                    seed = args.seed + sample.index
                    off = run_config(
                        gateway, config, defended, "off", args.budget, sample, evaluator, seed
                    )
                    off.pop("overlap")
                    rows.append(
                        {"config": config.label, "snd": defended, "image": sample.index, "off": off}
                    )
                    progress.advance(task)
            evaluator.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--shadow-budget", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=10000)
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", nargs="+", default=["benign", "bytes", "attacks", "baseline"])
    parser.add_argument(
        "--configs",
        nargs="+",
        metavar="LABEL",
        help="measure only these attack configurations (labels as in the table, e.g. "
        "popskipjump) and merge them into the existing attacks.json",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.detection_eval " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k not in ("parts", "configs")
    )
    if "benign" in args.parts:
        (OUT / "benign.json").write_text(
            json.dumps({"command": command, "streams": benign_part(args)})
        )
    if "bytes" in args.parts:
        (OUT / "bytes.json").write_text(
            json.dumps({"command": command, "bytes": redis_bytes_per_query(args)})
        )
    if "baseline" in args.parts:
        rows = baseline_part(args)
        (OUT / "baseline.json").write_text(json.dumps({"command": command, "rows": rows}))
    if "attacks" in args.parts:
        path = OUT / "attacks.json"
        if args.configs:
            known = {c.label: c for c in configs()}
            unknown = [label for label in args.configs if label not in known]
            if unknown:
                parser.error(f"unknown configurations {unknown}; known: {sorted(known)}")
            old = json.loads(path.read_text()) if path.exists() else {"rows": []}
            new = attacks_part(args, [known[label] for label in args.configs])
            rows = merge_rows(old["rows"], new)
            added = f"{command} --parts attacks --configs " + " ".join(
                map(shlex.quote, args.configs)
            )
            commands = [*old.get("commands", [old.get("command", "")]), added]
        else:
            rows = attacks_part(args, configs())
            commands = [command]
        payload = {"command": commands[0], "commands": commands, "rows": rows}
        path.write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
