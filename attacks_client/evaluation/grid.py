"""The experiment grid (``python -m attacks_client evaluate``): the paper's protocol.

For every (attack, endpoint, image) of the grid, one JSONL record with the queries used, the
candidate's L2 and the evaluator's verdict at each budget checkpoint, the L2 of the q-th query
image (paper Table 3), and P_mis = P(h(x) != h(x + eta)) over a sample of the attack's queries
(Table 5). Success at q and epsilon = the candidate is within epsilon of x0 and the defended
endpoint misclassifies it by a majority of ``eval_draws`` draws, asked under the evaluator's
identity (not charged to the attacker). Finished records are skipped on a rerun.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from attacks_client.attacks import AttackResult, get_attack
from attacks_client.data import START_POOL, ImageSet, load_images, other_class_start
from attacks_client.evaluation.experiment import AttackConfig, EndpointConfig, Experiment
from attacks_client.evaluation.launch import LocalService
from attacks_client.evaluation.records import (
    ACCURACY,
    IMAGES,
    RECORDS,
    build_record,
    jsonable,
    majority_misclassified,
    read_lines,
)
from attacks_client.evaluation.resume import (
    ResumeMismatch,
    check_resume,
    describe,
    run_lock,
)
from attacks_client.evaluation.shards import Shard, write_shard
from attacks_client.oracles import (
    HttpOracle,
    Oracle,
    RecordingOracle,
    RepeatOracle,
    SharedRequests,
    open_oracle,
)

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 32  # runs at once: their queries share requests (benchmarks/bench_grid.py)


class Evaluation:
    """One experiment run into ``out_dir``; resumable."""

    def __init__(
        self,
        experiment: Experiment,
        out_dir: Path,
        urls: dict[str, str],
        *,
        share: bool = True,
        shard: Shard | None = None,
    ) -> None:
        """``share``: concurrent runs against one caller of one model share HTTP requests
        (:class:`SharedRequests`); ``shard``: run only this shard's jobs (and the clean
        accuracy only in the first)."""
        self.experiment = experiment
        self.out_dir = out_dir
        self.urls = urls
        self.share = share
        self.shard = shard
        self.sharing: dict[tuple[str, str | None, str | None], SharedRequests] = {}
        self._lock = threading.Lock()
        out_dir.mkdir(parents=True, exist_ok=True)

    def oracle(
        self,
        endpoint: EndpointConfig,
        *,
        evaluator: bool,
        scores: bool = False,
    ) -> HttpOracle:
        key = (endpoint.eval_api_key or endpoint.api_key) if evaluator else endpoint.api_key
        model = (endpoint.eval_model or endpoint.model) if evaluator else endpoint.model
        url = self.urls[endpoint.name]
        sharing = None
        if self.share:
            with self._lock:
                sharing = self.sharing.setdefault((url, model, key), SharedRequests())
        return open_oracle(  # /predict, or OIP v2 for a v2+http:// URL
            url,
            model,
            api_key=key,
            output="scores" if scores else "label",
            sharing=sharing,
        )

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
        partial = path.with_suffix(".partial")  # other shards may be waiting for the file
        partial.write_text(
            json.dumps(
                {
                    "reference": self.experiment.reference.name,
                    "seed": self.experiment.seed,
                    "indices": chosen,
                }
            )
        )
        partial.replace(path)
        return chosen

    def clean_accuracy(self, data: ImageSet) -> None:
        """Table 1 and the clean-image statistics of Sec. 4.2, per endpoint: accuracy over
        ``accuracy_repeats`` passes of the test images, P_mis on clean images (answers that
        differ from the reference endpoint's), and σ̂ = the std of the margin loss under the
        endpoint's noise (``sigma_hat_draws`` draws of ``sigma_hat_images`` images; needs
        scores)."""
        path = self.out_dir / ACCURACY
        done = {json.loads(line)["endpoint"] for line in read_lines(path)}
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
                record = {
                    "endpoint": endpoint.name,
                    "accuracies": accuracies,
                    "images": limit,
                    "clean_p_mis": float(np.mean(mismatch)),
                    "defense": oracle.defense,
                    "architecture": oracle.architecture,
                    "input_shape": list(oracle.input_shape),
                    "pmis_reference": reference.name,
                    "sigma_hat": self.sigma_hat(endpoint, oracle, images, labels),
                }
            with path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def sigma_hat(
        self, endpoint: EndpointConfig, oracle: HttpOracle, images: np.ndarray, labels: np.ndarray
    ) -> float | None:
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

    def jobs(
        self, images: list[int], block: int = 1
    ) -> list[tuple[AttackConfig, EndpointConfig, int]]:
        """The runs still to do (of this shard), image-block-major: every attack and endpoint
        on ``block`` images before the next block (a run cut short still covers the whole grid
        on its images), and within a block one (attack, endpoint) on all its images in a row
        (runs side by side then ask the same model, so their queries share requests)."""
        records = [json.loads(line) for line in read_lines(self.out_dir / RECORDS)]
        self.check_params(records)
        done = {(r["attack"], r["endpoint"], r["image"]) for r in records}
        exp = self.experiment
        canonical = [  # image, attack, endpoint: the order shards are dealt in
            (n, k, m, i)
            for n, i in enumerate(images)
            for k, a in enumerate(exp.attacks)
            for m, e in enumerate(exp.endpoints)
            if a.runs_on(e.name) and (a.images is None or n < a.images)
        ]
        mine = [
            job
            for position, job in enumerate(canonical)
            if (self.shard is None or self.shard.owns(position))
            and (exp.attacks[job[1]].key, exp.endpoints[job[2]].name, job[3]) not in done
        ]
        mine.sort(key=lambda job: (job[0] // max(1, block), job[1], job[2], job[0]))
        return [(exp.attacks[k], exp.endpoints[m], i) for _, k, m, i in mine]

    def check_params(self, records: list[dict[str, Any]]) -> None:
        """Refuse to resume over records made with other attack parameters than the config's,
        defaults included (a changed ``params`` or default would otherwise mix two settings in
        one table)."""
        # every hyperparameter, defaults included: a changed default is a changed setting
        attacks = {
            a.key: {k: v for k, v in get_attack(a.name)(**a.params).params().items() if jsonable(v)}
            for a in self.experiment.attacks
        }
        for record in records:
            params = attacks.get(record["attack"])
            if params is None:
                continue
            stored = record.get("params", {})
            changed = sorted(
                k for k, v in params.items() if json.dumps(stored.get(k)) != json.dumps(v)
            )
            if changed:
                raise ResumeMismatch(
                    f"{self.out_dir / RECORDS} holds {record['attack']} records made with other "
                    f"values of {', '.join(changed)} than the config's; remove those records "
                    "or use a new output directory"
                )

    def run_job(
        self, attack: AttackConfig, endpoint: EndpointConfig, image: int, data: ImageSet
    ) -> dict[str, Any]:
        start = time.perf_counter()
        exp = self.experiment
        attack_cls = get_attack(attack.name)
        with ExitStack() as stack:
            http = stack.enter_context(
                self.oracle(endpoint, evaluator=False, scores=attack_cls.needs_scores)
            )
            recording = RecordingOracle(http, exp.pmis_samples, seed=exp.seed + image)
            oracle: Oracle = recording
            if attack.repeat > 1:
                oracle = RepeatOracle(recording, attack.repeat, mean=attack_cls.repeat_mean)
            label = int(data.labels[image])
            start_image = None
            if attack.start == "other-class":
                start_image = other_class_start(self._start_pool(data), label)
            result = attack_cls(**attack.params)(
                oracle,
                data.images[image],
                label,
                exp.budget,
                seed=exp.seed + image,
                start=start_image,
            )
            evaluator = stack.enter_context(self.oracle(endpoint, evaluator=True))
            verdicts = self.judge(evaluator, result)
            judge_queries = evaluator.queries
            p_mis = None
            if recording.images:
                reference = stack.enter_context(
                    self.oracle(exp.pmis_reference_of(endpoint), evaluator=True)
                )
                clean = reference.labels(np.stack(recording.images))
                p_mis = (int((clean != np.array(recording.answers)).sum()), len(clean))
        return build_record(
            exp,
            attack,
            endpoint,
            image,
            result,
            verdicts,
            p_mis,
            time.perf_counter() - start,
            judge_queries,
        )

    def _start_pool(self, data: ImageSet) -> ImageSet:
        """The experiment's first ``START_POOL`` images, where natural starts come from."""
        pool = self.select_images(data)[:START_POOL]
        return ImageSet(data.images[pool], data.labels[pool])

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
        verdicts = majority_misclassified(
            evaluator, [by_id[i] for i in ids], result.label, self.experiment.eval_draws
        )
        by_candidate = dict(zip(ids, verdicts, strict=True))
        return {q: by_candidate[i] for q, i in at.items()}

    def write(self, record: dict[str, Any]) -> None:
        with self._lock, (self.out_dir / RECORDS).open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def run(self, workers: int = 1, progress: bool = True) -> None:
        data = load_images(self.experiment.dataset)
        images = self.select_images(data)
        if self.shard is None or self.shard.first:
            self.clean_accuracy(data)
        jobs = self.jobs(images, block=workers)
        log.info("%d records to run (%d workers)", len(jobs), workers)
        bar = tqdm(
            total=len(jobs),
            desc=f"evaluate {self.experiment.name}",
            unit="run",
            disable=not progress,
        )
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            futures = {
                pool.submit(self.run_job, a, e, i, data): (a.key, e.name, i) for a, e, i in jobs
            }
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


def evaluate(
    experiment: Experiment,
    out_dir: Path,
    *,
    workers: int = DEFAULT_WORKERS,
    progress: bool = True,
    share: bool = True,
    shard: Shard | None = None,
) -> Path:
    """Run (or resume) an experiment, or one ``shard`` of it, with ``workers`` runs at once
    (sharing HTTP requests unless ``share`` is false); start the endpoints that ask to be
    served locally."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(run_lock(out_dir))
        description = describe(experiment)
        check_resume(out_dir, description)
        write_shard(out_dir, shard)
        (out_dir / "experiment.json").write_text(json.dumps(description, indent=1))
        urls = serve_endpoints(experiment, stack)
        Evaluation(experiment, out_dir, urls, share=share, shard=shard).run(workers, progress)
    return out_dir


def serve_endpoints(experiment: Experiment, stack: ExitStack) -> dict[str, str]:
    """The URL of every endpoint; the local services the experiment asks for are started and
    left to ``stack`` to stop."""
    urls = {}
    shared = (
        stack.enter_context(LocalService(experiment.serve)).url
        if experiment.serve is not None
        else None
    )
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
