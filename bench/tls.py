"""What TLS and tokens cost a Recommend: two suites side by side, one plaintext and open
as the embedded default runs, one with mutual TLS between every service, TLS on the
gateway, a bearer token on every call and Triton's model control behind its key, as the
Kubernetes overlays run it. Both hold the same catalogue and events and serve a model
trained on them (Recommend goes through Triton); paired rounds (one, then the other,
each warm) at 8 callers, the verdict on the median ratio of their p50 and p99. The aim
(issue 20): at most 15% slower."""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.events import RecommendCaller, rated_by_user
from bench.model import job_config, wait_for_model
from bench.timing import CLIENT_SETTINGS, connect, run_callers
from services.launcher import WITHOUT_TRAINER, Suite, SuiteSpec
from services.trainer import run_job
from shared import tls
from shared.access import new_token
from shared.items import Item
from shared.model_store import model_name
from suite.certs import Authority
from suite.client import batches
from suite.datasets import DatasetEvent, dataset_dir, load_interactions

ROUNDS = 5
CALLERS = 8
TRAIN_MAX_SECONDS = 30.0
CONTROL_KEY = "bench-control-key"
EVENTS = 20_000
AIM_RATIO = 1.15
SEED = 20


def serve_model(spec: SuiteSpec, user_id: str, calls_with: tls.TlsFiles | None, key: str) -> str:
    """Trains a two-tower model on the suite's events and waits until the gateway serves
    it (so Recommend goes through Triton, with TLS where the suite has it)."""
    config = job_config(spec)
    config = replace(
        config,
        triton_control_key=key,
        train=replace(config.train, max_seconds=TRAIN_MAX_SECONDS),
    )
    tls.use_for_calls(calls_with)
    try:
        job = asyncio.run(run_job(config))
    finally:
        tls.use_for_calls(None)
    if job.report is None:
        raise RuntimeError("run_job published nothing")
    name = model_name(job.report.version)
    wait_for_model(spec.address("gateway"), user_id, name)
    return name


def secure_settings(root: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The suite's environment with TLS and tokens on, and how a client reaches it."""
    authority = Authority.new("recsys bench CA")
    issued = authority.issue(root / "tls", "recsys-bench")
    token, line = new_token("bench", ["read", "write"])
    tokens = root / "tokens"
    tokens.write_text(line + "\n")
    key = root / "control-key"
    key.write_text(CONTROL_KEY + "\n")
    env = {
        **issued.env(),
        "RECSYS_GATEWAY_TOKENS_FILE": str(tokens),
        "RECSYS_TRITON_CONTROL_KEY_FILE": str(key),
    }
    return env, {"token": token, "ca": issued.ca}


def _load(address: str, movies: Sequence[Item], events: Sequence[DatasetEvent]) -> None:
    client = connect(address, timeout_s=300.0)
    try:
        for batch in batches(movies, 500):
            client.upsert(batch)
        for chunk in batches([e.to_api() for e in events], 5_000):
            client.stub.LogEvents(_request(chunk), timeout=300.0)
    finally:
        client.close()


def _request(events: Sequence[Any]) -> Any:
    from recsys.gateway.v1 import gateway_pb2

    return gateway_pb2.LogEventsRequest(events=list(events))


def _round(
    address: str, users: Sequence[str], requests: int, draw: random.Random
) -> dict[str, float]:
    keys = draw.choices(users, k=requests)
    warmup = draw.choices(users, k=CALLERS * 20)
    stats = run_callers(lambda: RecommendCaller(address), keys, warmup, CALLERS)
    return {"p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms}


def bench_tls(movies: Sequence[Item], requests: int) -> dict[str, Any]:
    interactions = load_interactions(dataset_dir() / "ratings.csv")[:EVENTS]
    users = sorted(rated_by_user(interactions))
    draw = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="recsys-bench-tls-") as tmp:
        root = Path(tmp)
        plain = SuiteSpec.on_free_ports(root / "plain", root / "plain" / "logs", WITHOUT_TRAINER)
        print("Starting a plaintext suite and one with TLS and tokens ...", flush=True)
        with Suite(plain):
            env, client = secure_settings(root)
            secure = SuiteSpec.on_free_ports(
                root / "secure", root / "secure" / "logs", WITHOUT_TRAINER
            )
            secure = replace(secure, extra_env={**secure.extra_env, **env})
            with Suite(secure):
                CLIENT_SETTINGS[secure.address("gateway")] = client
                for spec in (plain, secure):
                    _load(spec.address("gateway"), movies, interactions)
                print(f"Training a model in each (at most {TRAIN_MAX_SECONDS:g} s) ...", flush=True)
                serve_model(plain, users[0], None, "")
                serve_model(secure, users[0], secure.tls_files(), CONTROL_KEY)
                rounds = []
                for number in range(1, ROUNDS + 1):
                    measured = {
                        name: _round(spec.address("gateway"), users, requests, draw)
                        for name, spec in (("plain", plain), ("secure", secure))
                    }
                    rounds.append(measured)
                    print(
                        f"round {number}: p50 {measured['plain']['p50_ms']:.1f} ->"
                        f" {measured['secure']['p50_ms']:.1f} ms, p99"
                        f" {measured['plain']['p99_ms']:.1f} -> {measured['secure']['p99_ms']:.1f}"
                        " ms (plaintext -> TLS and tokens)",
                        flush=True,
                    )
    return summarize(rounds)


def summarize(rounds: Sequence[dict[str, dict[str, float]]]) -> dict[str, Any]:
    def ratio(figure: str) -> float:
        return statistics.median(r["secure"][figure] / r["plain"][figure] for r in rounds)

    def median(side: str, figure: str) -> float:
        return statistics.median(r[side][figure] for r in rounds)

    report: dict[str, Any] = {
        "callers": CALLERS,
        "rounds": list(rounds),
        "plain_p50_ms": median("plain", "p50_ms"),
        "plain_p99_ms": median("plain", "p99_ms"),
        "secure_p50_ms": median("secure", "p50_ms"),
        "secure_p99_ms": median("secure", "p99_ms"),
        "p50_ratio": ratio("p50_ms"),
        "p99_ratio": ratio("p99_ms"),
        "aim_ratio": AIM_RATIO,
    }
    met = report["p50_ratio"] <= AIM_RATIO and report["p99_ratio"] <= AIM_RATIO
    report["aim_met"] = met
    print(
        f"Recommend at {CALLERS} callers, median of {len(rounds)} paired rounds: p50"
        f" {report['plain_p50_ms']:.1f} -> {report['secure_p50_ms']:.1f} ms"
        f" ({report['p50_ratio']:.2f}x), p99 {report['plain_p99_ms']:.1f} ->"
        f" {report['secure_p99_ms']:.1f} ms ({report['p99_ratio']:.2f}x) with TLS and tokens;"
        f" aim at most {AIM_RATIO:.2f}x: {'met' if met else 'NOT met'}",
        flush=True,
    )
    return report
