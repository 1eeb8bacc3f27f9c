"""The in-process yardstick: the gateway's ranking policy over a copy of the bench suite's
state (its histories, trending, indexes and live model version) in this one process, with
no gRPC (suite/in_process.py), called for the same users as the suite's Recommend runs.
Its CPU per call is what the ranking itself costs; the suite's, divided by it, is the
price of running it as services.

This machine's speed drifts by a third or more within minutes (the same code measured 2.9x
and 4.2x the same day), so the aim's ratio comes from paired rounds: the suite's run at
the aim's callers and the in-process run right after it, a few times over, and the
median of the rounds' ratios."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from bench.events import AIM_RECOMMEND_CALLERS, RecommendResult, RecommendRun, measure_recommend
from bench.timing import SEED, WARMUP_CALLS, K, torch_threads
from services.gateway import RecommendQuery
from services.launcher import SuiteSpec
from suite.in_process import InProcessRecommend, SuiteState

AIM_RATIO = 3.0  # the suite's CPU per Recommend at most this many times the in-process one
SAME_LIST_SAMPLE = 50
PAIRED_ROUNDS = 3


@dataclass(frozen=True)
class InProcessRun:
    path: str  # "content" or "model"
    calls: int
    cpu_ms_per_call: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class PairedRound:
    """The suite with the model at the aim's callers (every process and the callers), then
    the in-process path, for the same users."""

    suite_cpu_ms_per_call: float
    in_process_cpu_ms_per_call: float

    @property
    def ratio(self) -> float:
        return self.suite_cpu_ms_per_call / self.in_process_cpu_ms_per_call


@dataclass(frozen=True)
class Yardstick:
    content: InProcessRun
    model: InProcessRun
    agreeing: int  # of `sampled` users, those given the suite's very list
    sampled: int
    rounds: list[PairedRound]

    @property
    def median_ratio(self) -> float:
        return statistics.median(r.ratio for r in self.rounds)


async def _timed(
    engine: InProcessRecommend, path: str, user_ids: Sequence[str], warmup: Sequence[str]
) -> InProcessRun:
    with_model = path == "model"
    for user in warmup:
        await engine.recommend(RecommendQuery(user, K), with_model)
    latencies = []
    cpu_before = time.process_time()
    for user in user_ids:
        started = time.perf_counter()
        await engine.recommend(RecommendQuery(user, K), with_model)
        latencies.append(1000 * (time.perf_counter() - started))
    cpu_ms = 1000 * (time.process_time() - cpu_before) / len(user_ids)
    return InProcessRun(
        path,
        len(user_ids),
        cpu_ms,
        statistics.median(latencies),
        float(np.percentile(latencies, 99)),
    )


async def _agreement(engine: InProcessRecommend, suite_lists: dict[str, list[str]]) -> int:
    agreeing = 0
    for user, served in suite_lists.items():
        answer = await engine.recommend(RecommendQuery(user, K))
        agreeing += [i.item_id for i in answer.items] == served
    return agreeing


def measure_in_process(
    spec: SuiteSpec,
    users: Sequence[str],
    requests: int,
    suite_lists: dict[str, list[str]],
    address: str,
    service_pids: Mapping[str, int],
) -> Yardstick:
    """The suite's draw of users (the events part's, by SEED), each path in turn, one call
    at a time; `suite_lists` are the suite's answers for some users, to check that this is
    the same ranking. Then PAIRED_ROUNDS of the suite's Recommend at `address` (the model
    serving) and this path with the model, one after the other."""
    draw = random.Random(SEED)
    user_ids = draw.choices(users, k=requests)
    warmup = draw.choices(users, k=WARMUP_CALLS)
    state = SuiteState(spec.data_dir, spec.model_dir)
    # One thread each, as the services run them: Triton's torch, retrieval's BLAS.
    with (
        torch_threads(1),
        threadpool_limits(1),
        InProcessRecommend(state, dict(spec.extra_env)) as engine,
    ):

        async def run() -> Yardstick:
            content = await _timed(engine, "content", user_ids, warmup)
            model = await _timed(engine, "model", user_ids, warmup)
            agreeing = await _agreement(engine, suite_lists)
            rounds = []
            for _ in range(PAIRED_ROUNDS):
                # Blocks this loop while the suite's callers (threads) run: nothing else is on it.
                suite = measure_recommend(
                    address,
                    users,
                    requests,
                    random.Random(SEED),
                    service_pids,
                    (AIM_RECOMMEND_CALLERS,),
                )
                served = await _timed(engine, "model", user_ids, warmup)
                rounds.append(PairedRound(suite.runs[0].cpu_ms_total, served.cpu_ms_per_call))
            return Yardstick(content, model, agreeing, len(suite_lists), rounds)

        return asyncio.run(run())


def suite_at(runs: Sequence[RecommendRun], callers: int) -> float:
    return next(r.cpu_ms_total for r in runs if r.callers == callers)


def print_yardstick(
    result: Yardstick, content: RecommendResult, model: RecommendResult, name: str, callers: int
) -> None:
    print(
        f"\nIn-process yardstick: the gateway's policy over a copy of this suite's state (the"
        f" same history, trending, indexes and {name}) in one process without gRPC, torch"
        f" threads=1, {result.content.calls} calls for the same users, one at a time;"
        f" {result.agreeing}/{result.sampled} sampled users got the suite's very list"
    )
    print(
        f"{'path':>16} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>8}  suite CPU ms at {callers} callers"
    )
    for run, suite in ((result.content, content), (result.model, model)):
        label = "content profile" if run.path == "content" else name
        served = suite_at(suite.runs, callers)
        print(
            f"{label:>16} {run.p50_ms:>8.2f} {run.p99_ms:>8.2f} {run.cpu_ms_per_call:>8.2f}"
            f"  {served:.2f} = {served / run.cpu_ms_per_call:.1f}x the in-process path"
        )
    print(
        f"Paired rounds with {name}: the suite at {callers} callers, then the in-process path"
        f" right after it, {len(result.rounds)} times"
    )
    for number, paired in enumerate(result.rounds, start=1):
        print(
            f"  round {number}: suite {paired.suite_cpu_ms_per_call:.2f} ms, in-process"
            f" {paired.in_process_cpu_ms_per_call:.2f} ms = {paired.ratio:.2f}x"
        )
    verdict = "met" if result.median_ratio <= AIM_RATIO else "NOT met"
    print(
        f"aim: the suite at most {AIM_RATIO:g}x the in-process CPU per call with the model"
        f" (the rounds' median, {result.median_ratio:.2f}x): {verdict}"
    )
