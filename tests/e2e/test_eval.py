"""`recsys eval` on a slice of the shipped MovieLens data, as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.gateway.recommend import TUNED_SETTINGS

RECSYS = str(Path(sys.executable).parent / "recsys")
MODEL = "suite: two-tower (retrained per block)"
CONTINUAL = "suite: continual trainer"
BASELINES = {"most-popular", "recently-popular", "item-knn", "als (per-event user factors)"}
SUBJECTS = {"suite: content-profile", MODEL, CONTINUAL} | BASELINES


@pytest.mark.timeout(900)
def test_eval_reports_both_protocols_for_suite_and_baselines(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = subprocess.run(
        [
            RECSYS,
            "eval",
            "--max-events",
            "1000",
            "--blocks",
            "2",
            "--train-seconds",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    assert set(report["subjects"]) == SUBJECTS
    for name, figures in report["subjects"].items():
        blocks = figures["blocks"]["per_block"]
        assert len(blocks) == 2 and len(figures["prequential"]["per_block"]) == 2
        for key in ("recall@20", "ndcg@10", "hr@10", "cold_recall@20", "coverage@10", "gini@10"):
            assert all(0.0 <= block[key] <= 1.0 for block in blocks), (name, key)
    suite = report["subjects"]["suite: content-profile"]
    assert suite["prequential"]["overall"]["hr@10"] > 0
    model = report["subjects"][MODEL]
    assert model["prequential"]["overall"]["hr@10"] > 0
    # The suite as make up runs it: the trainer's choice of ranking settings is reported.
    continual = report["subjects"][CONTINUAL]
    assert continual["prequential"]["overall"]["hr@10"] > 0
    assert set(continual["ranking"]["prequential"]["settings"]) == set(TUNED_SETTINGS)
    assert "the ranking settings its trainer chose" in (out / "eval.md").read_text()
    assert "| item-knn |" in (out / "eval.md").read_text()
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
