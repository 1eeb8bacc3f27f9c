"""The evaluation's report: JSON for machines, Markdown for people, a PNG of the blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BLOCK_COLUMNS = [
    ("recall@10", "Recall@10"),
    ("recall@20", "Recall@20"),
    ("ndcg@10", "NDCG@10"),
    ("ndcg@20", "NDCG@20"),
    ("hr@10", "HR@10"),
    ("cold_recall@20", "cold Recall@20"),
    ("coverage@10", "coverage@10"),
    ("gini@10", "Gini@10"),
]


def markdown(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        f"Replay of {setup['interactions']:,} interactions ({setup['source']}): the first "
        f"{setup['history_fraction']:.0%} in time order is history, the rest "
        f"{setup['blocks']} blocks. Blocks: users weighted; prequential: events weighted.",
        "",
        "| subject | prequential HR@10 | " + " | ".join(t for _, t in BLOCK_COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(BLOCK_COLUMNS),
    ]
    for name, result in report["subjects"].items():
        blocks = result["blocks"]["overall"]
        cells = [f"{result['prequential']['overall']['hr@10']:.3f}"]
        cells += [f"{blocks[key]:.3f}" for key, _ in BLOCK_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, result in report["subjects"].items():
        for protocol, chosen in result.get("ranking", {}).items():
            settings = ", ".join(f"{k} {v:g}" for k, v in sorted(chosen["settings"].items()))
            lines += [
                "",
                f"{name}, at the end of the {protocol} replay: the ranking settings its "
                f"trainer chose ({chosen['changes']} changes): {settings or 'not tuned'}",
            ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("blocks", "ndcg@10", "NDCG@10"),
        ("blocks", "recall@20", "Recall@20"),
        ("blocks", "cold_recall@20", "cold-start Recall@20"),
        ("prequential", "hr@10", "prequential HR@10"),
    ]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for axis, (protocol, key, title) in zip(axes.flat, panels, strict=True):
        for name, result in report["subjects"].items():
            values = [block[key] for block in result[protocol]["per_block"]]
            axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
        axis.set_title(title)
        axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("block")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(report: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "eval.json", out_dir / "eval.md", out_dir / "eval.png"]
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    return paths
