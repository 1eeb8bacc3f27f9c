"""The `recsys` command: run the suite, its demo, its benchmark and its evaluation."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from services.suite.launcher import Suite, SuiteError, SuiteSpec


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or Ctrl-C; install it before anything starts, so that a
    signal during start-up still stops what was started."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def supervise(suite: Suite, stop: threading.Event) -> int:
    """Keeps a started suite running until `stop` is set, or until a service dies."""
    print(
        f"recsys: suite ready; gateway at {suite.spec.address('gateway')},"
        f" data in {suite.spec.data_dir}. Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    crashed = None
    while not stop.wait(0.5):
        crashed = suite.first_exited()
        if crashed:
            print(f"recsys: {crashed} exited; stopping the suite", file=sys.stderr)
            break
    codes = suite.stop()
    print(f"recsys: stopped ({', '.join(f'{s}={c}' for s, c in codes.items())})", file=sys.stderr)
    return 1 if crashed else 0


def _up(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    suite = Suite(SuiteSpec.from_env())
    try:
        suite.start()
    except SuiteError as error:
        print(f"recsys: {error}", file=sys.stderr)
        return 1
    return supervise(suite, stop)


def _demo(args: argparse.Namespace) -> int:
    from services.suite.demo import run_demo

    return run_demo(keep_running=args.keep_running)


def _bench(args: argparse.Namespace) -> int:
    from services.suite.bench import run_bench

    return run_bench(requests=args.requests)


def _eval(args: argparse.Namespace) -> int:
    from services.suite.evaluation.runner import run_eval

    return run_eval(args.ratings, args.out, args.blocks, args.history, args.max_events)


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
    args = parser.parse_args(argv)
    handlers = {"up": _up, "demo": _demo, "bench": _bench, "eval": _eval}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
