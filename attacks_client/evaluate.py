"""``python -m attacks_client evaluate --config experiments/<name>.toml``: the paper's protocol.

For every (attack, endpoint, image) of the grid, one JSONL record with the queries used, the
candidate's L2 and the evaluator's verdict at each budget checkpoint, the L2 of the q-th query
image (paper Table 3), and P_mis = P(h(x) != h(x + eta)) over a sample of the attack's queries
(Table 5). Success at q and epsilon = the candidate is within epsilon of x0 and the defended
endpoint misclassifies it by a majority of ``eval_draws`` draws, asked under the evaluator's
identity (not charged to the attacker). Finished records are skipped on a rerun.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from attacks_client.adaptive import RepeatOracle
from attacks_client.attacks import AttackResult, get_attack
from attacks_client.data import ImageSet, load_images
from attacks_client.experiment import AttackConfig, EndpointConfig, Experiment
from attacks_client.http import HttpOracle
from attacks_client.launch import LocalService
from attacks_client.oracle import Oracle, OracleWrapper

log = logging.getLogger(__name__)
RECORDS, ACCURACY, IMAGES = "records.jsonl", "accuracy.jsonl", "images.json"
TRAJECTORY_POINTS = 100


class RecordingOracle(OracleWrapper):
    """Passes queries through and keeps a uniform sample (reservoir) of (image, answered label)."""

    def __init__(self, inner: Oracle, capacity: int, seed: int) -> None:
        super().__init__(inner)
        self.capacity = capacity
        self.images: list[np.ndarray] = []
        self.answers: list[int] = []
        self._seen = 0
        self._rng = np.random.default_rng(seed)

    def _record(self, x: np.ndarray, labels: np.ndarray) -> None:
        for image, label in zip(np.asarray(x, np.float32), labels, strict=True):
            self._seen += 1
            if len(self.images) < self.capacity:
                self.images.append(image.copy())
                self.answers.append(int(label))
            else:
                slot = int(self._rng.integers(self._seen))
                if slot < self.capacity:
                    self.images[slot], self.answers[slot] = image.copy(), int(label)

    def labels(self, x: np.ndarray) -> np.ndarray:
        labels = self.inner.labels(x)
        self._record(x, labels)
        return labels

    def scores(self, x: np.ndarray) -> np.ndarray:
        scores = self.inner.scores(x)
        self._record(x, scores.argmax(1))
        return scores


def encode_array(x: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.asarray(x, np.float32).tobytes())).decode()


def decode_array(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), np.float32).reshape(shape)


def majority_misclassified(evaluator: HttpOracle, candidates: list[np.ndarray], label: int,
                           draws: int) -> list[tuple[bool, int]]:
    """For each candidate: (misclassified by a majority of ``draws``, number of wrong votes)."""
    if not candidates:
        return []
    batch = np.repeat(np.stack(candidates).astype(np.float32), draws, axis=0)
    votes = evaluator.labels(batch).reshape(len(candidates), draws)
    wrong = (votes != label).sum(1)
    return [(bool(w * 2 > draws), int(w)) for w in wrong]


def query_l2_at(result: AttackResult, q: int) -> float | None:
    """L2 of the q-th query image (the last one if the attack stopped earlier)."""
    if len(result.query_l2) == 0:
        return None
    return float(result.query_l2[min(q, len(result.query_l2)) - 1])


def build_record(experiment: Experiment, attack: AttackConfig, endpoint: EndpointConfig,
                 image: int, result: AttackResult, verdicts: dict[int, tuple[bool, int]],
                 p_mis: tuple[int, int] | None, seconds: float,
                 judge_queries: int = 0) -> dict[str, Any]:
    grid = np.unique(np.linspace(1, experiment.budget, TRAJECTORY_POINTS).astype(int))
    checkpoints = {}
    for q in experiment.budget_checkpoints:
        candidate = result.candidate_at(q)
        misclassified, votes = verdicts.get(q, (False, 0))
        l2 = result.l2_at(q)
        checkpoints[str(q)] = {
            "l2": None if candidate is None else l2,
            "misclassified": candidate is not None and misclassified,
            "wrong_votes": votes,
            "query_l2": query_l2_at(result, q),
            "candidate": None if candidate is None else encode_array(candidate),
        }
    return {
        "attack": attack.key, "attack_name": attack.name, "repeat": attack.repeat,
        "params": {k: v for k, v in result.params.items() if _jsonable(v)},
        "endpoint": endpoint.name, "image": image, "label": result.label,
        "budget": result.budget, "queries": result.queries,
        "reference_queries": result.reference_queries, "stop_reason": result.stop_reason,
        "attack_seconds": result.wall_time, "seconds": seconds,
        "checkpoints": checkpoints,
        "candidate_l2": [[int(q), _finite(result.l2_at(int(q)))] for q in grid],
        "mean_query_l2": float(result.query_l2.mean()) if len(result.query_l2) else None,
        "p_mis": None if p_mis is None else {
            "mismatches": p_mis[0], "samples": p_mis[1],
            "reference": experiment.pmis_reference_of(endpoint).name},
        "judge_queries": judge_queries,
    }


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class Evaluation:
    """One experiment run into ``out_dir``; resumable."""

    def __init__(self, experiment: Experiment, out_dir: Path, urls: dict[str, str]) -> None:
        self.experiment = experiment
        self.out_dir = out_dir
        self.urls = urls
        self._lock = threading.Lock()
        out_dir.mkdir(parents=True, exist_ok=True)

    def oracle(self, endpoint: EndpointConfig, *, evaluator: bool, scores: bool = False,
               ) -> HttpOracle:
        key = (endpoint.eval_api_key or endpoint.api_key) if evaluator else endpoint.api_key
        return HttpOracle(self.urls[endpoint.name], endpoint.model, api_key=key,
                          output="scores" if scores else "label")

    # -- images and clean accuracy ------------------------------------------------------------

    def select_images(self, data: ImageSet) -> list[int]:
        """``images`` correctly classified test images (by the reference endpoint), seeded."""
        path = self.out_dir / IMAGES
        if path.exists():
            return list(json.loads(path.read_text())["indices"])
        order = np.random.default_rng(self.experiment.seed).permutation(len(data))
        chosen: list[int] = []
        with self.oracle(self.experiment.reference, evaluator=True) as ref:
            for start in range(0, len(order), 200):
                idx = order[start : start + 200]
                correct = ref.labels(data.images[idx]) == data.labels[idx]
                chosen.extend(int(i) for i in idx[correct])
                if len(chosen) >= self.experiment.images:
                    break
        chosen = chosen[: self.experiment.images]
        path.write_text(json.dumps({"reference": self.experiment.reference.name,
                                    "seed": self.experiment.seed, "indices": chosen}))
        return chosen

    def clean_accuracy(self, data: ImageSet) -> None:
        """Table 1 and the clean-image statistics of Sec. 4.2, per endpoint: accuracy over
        ``accuracy_repeats`` passes of the test images, P_mis on clean images (answers that
        differ from the reference endpoint's), and σ̂ = the std of the margin loss under the
        endpoint's noise (``sigma_hat_draws`` draws of ``sigma_hat_images`` images; needs
        scores)."""
        path = self.out_dir / ACCURACY
        done = {json.loads(line)["endpoint"] for line in _lines(path)}
        todo = [e for e in self.experiment.endpoints if e.name not in done]
        if not todo:
            return
        limit = self.experiment.accuracy_images or len(data)
        images, labels = data.images[:limit], data.labels[:limit]
        clean_by_reference: dict[str, np.ndarray] = {}
        for endpoint in todo:
            reference = self.experiment.pmis_reference_of(endpoint)
            if reference.name not in clean_by_reference:
                with self.oracle(reference, evaluator=True) as oracle:
                    clean_by_reference[reference.name] = oracle.labels(images)
            clean = clean_by_reference[reference.name]
            with self.oracle(endpoint, evaluator=True) as oracle:
                accuracies, mismatch = [], []
                for _ in range(self.experiment.accuracy_repeats):
                    answers = oracle.labels(images)
                    accuracies.append(float((answers == labels).mean()))
                    mismatch.append(float((answers != clean).mean()))
                record = {"endpoint": endpoint.name, "accuracies": accuracies, "images": limit,
                          "clean_p_mis": float(np.mean(mismatch)), "defense": oracle.defense,
                          "architecture": oracle.architecture,
                          "input_shape": list(oracle.input_shape),
                          "pmis_reference": reference.name,
                          "sigma_hat": self.sigma_hat(endpoint, oracle, images, labels)}
            with path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def sigma_hat(self, endpoint: EndpointConfig, oracle: HttpOracle, images: np.ndarray,
                  labels: np.ndarray) -> float | None:
        """Mean over images of the std, over noise draws, of the margin loss
        log p_y - max_{j != y} log p_j (paper Sec. 4.2: σ̂ = sqrt(Var[l(x + η)]))."""
        n = min(self.experiment.sigma_hat_images, len(images))
        draws = self.experiment.sigma_hat_draws
        if n == 0 or "scores" not in oracle.outputs:
            return None
        with self.oracle(endpoint, evaluator=True, scores=True) as scoring:
            probs = scoring.scores(np.repeat(images[:n], draws, axis=0))
        logp = np.log(np.clip(probs, 1e-30, None)).reshape(n, draws, -1)
        y = labels[:n]
        true = logp[np.arange(n), :, y]
        others = logp.copy()
        others[np.arange(n), :, y] = -np.inf
        margin = true - others.max(axis=2)
        return float(margin.std(axis=1).mean())

    # -- attacks ------------------------------------------------------------------------------

    def jobs(self, images: list[int]) -> list[tuple[AttackConfig, EndpointConfig, int]]:
        records = [json.loads(line) for line in _lines(self.out_dir / RECORDS)]
        self.check_params(records)
        done = {(r["attack"], r["endpoint"], r["image"]) for r in records}
        # image-major: a run cut short still covers every attack and endpoint on its images
        return [(a, e, i) for n, i in enumerate(images) for a in self.experiment.attacks
                for e in self.experiment.endpoints
                if a.runs_on(e.name) and (a.images is None or n < a.images)
                and (a.key, e.name, i) not in done]

    def check_params(self, records: list[dict[str, Any]]) -> None:
        """Refuse to resume over records made with other attack parameters than the config's,
        defaults included (a changed ``params`` or default would otherwise mix two settings in
        one table)."""
        # every hyperparameter, defaults included: a changed default is a changed setting
        attacks = {a.key: {k: v for k, v in get_attack(a.name)(**a.params).params().items()
                           if _jsonable(v)} for a in self.experiment.attacks}
        for record in records:
            params = attacks.get(record["attack"])
            if params is None:
                continue
            stored = record.get("params", {})
            changed = sorted(k for k, v in params.items()
                             if json.dumps(stored.get(k)) != json.dumps(v))
            if changed:
                raise ResumeMismatch(
                    f"{self.out_dir / RECORDS} holds {record['attack']} records made with other "
                    f"values of {', '.join(changed)} than the config's; remove those records "
                    "or use a new output directory")

    def run_job(self, attack: AttackConfig, endpoint: EndpointConfig, image: int,
                data: ImageSet) -> dict[str, Any]:
        start = time.perf_counter()
        exp = self.experiment
        attack_cls = get_attack(attack.name)
        with ExitStack() as stack:
            http = stack.enter_context(self.oracle(endpoint, evaluator=False,
                                                   scores=attack_cls.needs_scores))
            recording = RecordingOracle(http, exp.pmis_samples, seed=exp.seed + image)
            oracle: Oracle = recording
            if attack.repeat > 1:
                oracle = RepeatOracle(recording, attack.repeat)
            result = attack_cls(**attack.params)(oracle, data.images[image],
                                                 int(data.labels[image]), exp.budget,
                                                 seed=exp.seed + image)
            evaluator = stack.enter_context(self.oracle(endpoint, evaluator=True))
            verdicts = self.judge(evaluator, result)
            judge_queries = evaluator.queries
            p_mis = None
            if recording.images:
                reference = stack.enter_context(
                    self.oracle(exp.pmis_reference_of(endpoint), evaluator=True))
                clean = reference.labels(np.stack(recording.images))
                p_mis = (int((clean != np.array(recording.answers)).sum()), len(clean))
        return build_record(exp, attack, endpoint, image, result, verdicts, p_mis,
                            time.perf_counter() - start, judge_queries)

    def judge(self, evaluator: HttpOracle, result: AttackResult) -> dict[int, tuple[bool, int]]:
        """The evaluator's majority verdict on the candidate at each checkpoint (each distinct
        candidate asked once)."""
        by_id: dict[int, np.ndarray] = {}
        at: dict[int, int] = {}
        for q in self.experiment.budget_checkpoints:
            candidate = result.candidate_at(q)
            if candidate is not None:
                by_id.setdefault(id(candidate), candidate)
                at[q] = id(candidate)
        ids = list(by_id)
        verdicts = majority_misclassified(evaluator, [by_id[i] for i in ids], result.label,
                                          self.experiment.eval_draws)
        by_candidate = dict(zip(ids, verdicts, strict=True))
        return {q: by_candidate[i] for q, i in at.items()}

    def write(self, record: dict[str, Any]) -> None:
        with self._lock, (self.out_dir / RECORDS).open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def run(self, workers: int = 1, progress: bool = True) -> None:
        data = load_images(self.experiment.dataset)
        images = self.select_images(data)
        self.clean_accuracy(data)
        jobs = self.jobs(images)
        log.info("%d records to run (%d workers)", len(jobs), workers)
        bar = tqdm(total=len(jobs), desc=f"evaluate {self.experiment.name}", unit="run",
                   disable=not progress)
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            futures = {pool.submit(self.run_job, a, e, i, data): (a.key, e.name, i)
                       for a, e, i in jobs}
            for future in as_completed(futures):
                record = future.result()
                self.write(record)
                bar.update(1)
                bar.set_postfix_str(f"{record['attack']}@{record['endpoint']}")
        except BaseException:
            # interrupted: drop queued jobs; running ones end when their server goes away
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        bar.close()


class RunInProgress(RuntimeError):
    """Another process is writing the same run directory."""


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """One writer per run directory: two ``evaluate`` (or ``rejudge``) processes on the same
    directory would run and append the same records twice. The lock is an ``flock`` on
    ``out_dir/.lock``, released when the process ends, however it ends."""
    with (out_dir / ".lock").open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise RunInProgress(f"{out_dir} is being written by another process (pid {holder}); "
                                "wait for it to end or stop it first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield


class ResumeMismatch(ValueError):
    """The output directory holds records made with other attack parameters."""


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()]


def evaluate(experiment: Experiment, out_dir: Path, *, workers: int = 1,
             progress: bool = True) -> Path:
    """Run (or resume) an experiment; start the endpoints that ask to be served locally."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(run_lock(out_dir))
        description = _describe(experiment)
        _check_resume(out_dir, description)
        (out_dir / "experiment.json").write_text(json.dumps(description, indent=1))
        urls = serve_endpoints(experiment, stack)
        Evaluation(experiment, out_dir, urls).run(workers, progress)
    return out_dir


def serve_endpoints(experiment: Experiment, stack: ExitStack) -> dict[str, str]:
    """The URL of every endpoint; the local services the experiment asks for are started and
    left to ``stack`` to stop."""
    urls = {}
    shared = (stack.enter_context(LocalService(experiment.serve)).url
              if experiment.serve is not None else None)
    for endpoint in experiment.endpoints:
        if endpoint.url is None and endpoint.serve is None:
            assert shared is not None
            urls[endpoint.name] = shared
        elif endpoint.serve is not None:
            urls[endpoint.name] = stack.enter_context(LocalService(endpoint.serve)).url
        else:
            assert endpoint.url is not None
            urls[endpoint.name] = endpoint.url
    return urls


# what a record depends on besides its attack's params (checked per record by `jobs`)
RECORD_SETTINGS = ("dataset", "seed", "budget", "checkpoints", "eval_draws")


def _check_resume(out_dir: Path, description: dict[str, Any]) -> None:
    """Refuse to add records to a directory whose records were made under other settings."""
    previous = out_dir / "experiment.json"
    if not previous.exists() or not _lines(out_dir / RECORDS):
        return
    old = json.loads(previous.read_text())
    changed = [key for key in RECORD_SETTINGS if key in old and old[key] != description[key]]
    if changed:
        raise ResumeMismatch(
            f"{out_dir} holds records made with other values of {', '.join(changed)} than the "
            "config's; use a new output directory")


def _describe(experiment: Experiment) -> dict[str, Any]:
    """The experiment without secrets, for the report."""
    return {
        "name": experiment.name, "images": experiment.images, "seed": experiment.seed,
        "budget": experiment.budget, "checkpoints": list(experiment.budget_checkpoints),
        "epsilons": list(experiment.epsilons), "primary_epsilon": experiment.primary_epsilon,
        "eval_draws": experiment.eval_draws, "dataset": experiment.dataset,
        "endpoints": [{"name": e.name, "serve": e.serve, "url": e.url, "model": e.model}
                      for e in experiment.endpoints],
        "serve": experiment.serve,
        "attacks": [{"key": a.key, "name": a.name, "repeat": a.repeat, "params": a.params}
                    for a in experiment.attacks],
        "reference": experiment.reference.name,
    }
