"""The `recsys` command: run the suite, its demo, its benchmark and its evaluation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.launcher import Suite, SuiteError, SuiteSpec, stop_on_signals, supervise


def _up(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    try:
        spec = SuiteSpec.from_env()
    except ValueError as error:  # a bad RECSYS_* setting: say which and stop
        print(f"recsys: {error}", file=sys.stderr)
        return 2
    suite = Suite(spec)
    try:
        suite.start()
    except SuiteError as error:
        print(f"recsys: {error}", file=sys.stderr)
        return 1
    return supervise(suite, stop)


def _demo(args: argparse.Namespace) -> int:
    from suite.demo import run_demo

    return run_demo(keep_running=args.keep_running)


def _bench(args: argparse.Namespace) -> int:
    from bench.run import run_bench

    return run_bench(requests=args.requests, only=args.only)


def _eval(args: argparse.Namespace) -> int:
    from evaluation.runner import run_eval

    return run_eval(
        args.ratings,
        args.out,
        args.blocks,
        args.history,
        args.max_events,
        subjects=tuple(s.strip() for s in args.subjects.split(",") if s.strip()),
        train_seconds=args.train_seconds,
    )


def _train(args: argparse.Namespace) -> int:
    import asyncio

    from services.trainer import JobConfig, run_job

    result = asyncio.run(run_job(JobConfig.from_env(), args.from_offset, not args.no_publish))
    trained = result.trained
    figures = ", ".join(f"{k} {v:.3f}" for k, v in sorted(trained.metrics.items()))
    print(
        f"trained on {result.events} events in {trained.training_seconds:.1f}s"
        f" (through offset {trained.trained_through_offset}); held-out: {figures}"
    )
    if result.report:
        r = result.report
        print(
            f"published version {r.version}: {r.items} items embedded; load {r.load_s:.1f}s,"
            f" embed {r.embed_s:.1f}s, live after {r.switch_s:.1f}s"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from services.trainer import export_repository
    from shared.config import model_dir
    from shared.model_store import ModelStore

    version = export_repository(ModelStore(model_dir()), args.out, args.version)
    print(f"wrote version {version} for Triton's PyTorch backend (GPU) to {args.out}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from shared.access import new_token

    try:
        token, line = new_token(args.name, [s.strip() for s in args.scopes.split(",")])
    except ValueError as error:
        print(f"recsys: {error}", file=sys.stderr)
        return 2
    # The token goes to the client only; the line (its hash) to the service's token file.
    print(f"token (give it to {args.name}; it is not stored anywhere): {token}")
    print(f"line for the token file: {line}")
    return 0


def _certs(args: argparse.Namespace) -> int:
    try:
        from suite.certs import Authority
    except ImportError:
        print("recsys: `recsys certs` needs the cryptography package", file=sys.stderr)
        return 2

    if args.out.exists() and any(args.out.iterdir()):
        print(f"recsys: {args.out} is not empty", file=sys.stderr)
        return 2
    authority = Authority.new("recsys local CA")
    issued = authority.issue(args.out, "recsys-local")
    (args.out / "ca.key").write_bytes(authority.key_pem())
    (args.out / "ca.key").chmod(0o600)
    print(f"a CA and one certificate for 127.0.0.1 and localhost in {args.out}; for every")
    print("service and the launcher (each service serves and calls with it):")
    for name, value in issued.env().items():
        print(f"export {name}={value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start every service on loopback, in the foreground")
    demo = commands.add_parser("demo", help="load MovieLens and print similar movies")
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave a suite that the demo started running afterwards",
    )
    bench = commands.add_parser(
        "bench", help="benchmark ingest rates, SimilarItems and Recommend latency"
    )
    bench.add_argument("--requests", type=int, default=2000, help="SimilarItems calls per run")
    bench.add_argument(
        "--only",
        choices=("suite", "trainer", "replicas", "tls"),  # bench.run.PARTS, not imported: heavy
        default=None,
        help="run one part: the suite without the trainer, the continual trainer's"
        " (memory, freshness, publish, learning), one against two replicas of the"
        " gateway, Triton and retrieval, or Recommend with TLS and tokens against"
        " plaintext; default: all",
    )
    evaluation = commands.add_parser(
        "eval", help="replay timestamped interactions through the API and report quality"
    )
    evaluation.add_argument(
        "--ratings",
        type=Path,
        default=None,
        help="CSV with user, item, timestamp (and rating) columns; default: MovieLens",
    )
    evaluation.add_argument("--out", type=Path, default=Path("reports/eval"))
    evaluation.add_argument("--blocks", type=int, default=8)
    evaluation.add_argument("--history", type=float, default=0.6, help="history fraction")
    evaluation.add_argument(
        "--max-events", type=int, default=0, help="replay only the first N events (0: all)"
    )
    training = commands.add_parser(
        "train",
        help="train the two-tower model on the running suite's event log and publish it",
    )
    training.add_argument("--from-offset", type=int, default=0, help="first log offset to learn")
    training.add_argument("--no-publish", action="store_true", help="train and save only")
    evaluation.add_argument(
        "--subjects",
        default="content,model,continual",
        help="the suite's subjects, comma-separated: content (no model), model (retrained "
        "per block by recsys train), continual (the continual trainer, as make up runs it)",
    )
    evaluation.add_argument(
        "--train-seconds", type=float, default=None, help="time budget of each model training"
    )
    export = commands.add_parser(
        "export",
        help="write a model version as a Triton repository for the PyTorch backend on GPUs",
    )
    export.add_argument("--out", type=Path, required=True, help="the repository to write")
    export.add_argument("--version", type=int, default=None, help="default: the live version")
    token = commands.add_parser(
        "token", help="make a bearer token for a client and its line for the token file"
    )
    token.add_argument("--name", required=True, help="who the token is for (one word)")
    token.add_argument("--scopes", required=True, help="comma-separated: read, write, admin")
    certs = commands.add_parser(
        "certs", help="make a local CA and a certificate, to run the suite with TLS on loopback"
    )
    certs.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    args = parser.parse_args(argv)
    handlers = {
        "up": _up,
        "demo": _demo,
        "bench": _bench,
        "eval": _eval,
        "train": _train,
        "export": _export,
        "token": _token,
        "certs": _certs,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
