"""The retrieval report: a terminal table, a JSON document, a Markdown table and a bar chart."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from app.console import out
from app.evaluation.metrics import METRICS, Scores, percentile

if TYPE_CHECKING:  # the benchmarks import this module for machine() and load_average()
    from app.evaluation.runs import SystemRun

CEILING_TOLERANCE = 0.005
LABELS = {"ndcg@10": "nDCG@10", "recall@10": "Recall@10", "mrr@10": "MRR@10"}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    ram_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def system_entry(run: SystemRun, scores: Scores) -> dict[str, Any]:
    ms = [s * 1000 for s in run.seconds]
    return {
        "kind": run.kind,
        "description": run.description,
        **{name: round(value, 4) for name, value in scores.means.items()},
        "latency_ms": {
            "p50": round(percentile(ms, 50), 2),
            "p95": round(percentile(ms, 95), 2),
            "mean": round(sum(ms) / len(ms), 2) if ms else None,
        },
        "setup_s": round(run.setup_seconds, 3),
    }


def ceiling(systems: dict[str, dict[str, Any]], chunk_overlap: float) -> dict[str, Any]:
    similarity, exact = systems["similarity"]["ndcg@10"], systems["exact"]["ndcg@10"]
    gap = round(exact - similarity, 4)
    return {
        "tolerance": CEILING_TOLERANCE,
        "similarity_ndcg@10": similarity,
        "exact_ndcg@10": exact,
        "gap": gap,
        "met": gap <= CEILING_TOLERANCE,
        "chunk_overlap": round(chunk_overlap, 4),
    }


def print_table(result: dict[str, Any]) -> None:
    data = result["dataset"]
    table = Table(
        title=(
            f"{escape(data['name'])} ({data['split']}): {data['evaluated_queries']} judged "
            f"queries, {data['documents']:,} documents, {result['chunks']:,} chunks, "
            f"{escape(result['embedding_model'])}"
        )
    )
    table.add_column("system")
    table.add_column("kind")
    for name in METRICS:
        table.add_column(LABELS[name], justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for name, entry in result["systems"].items():
        table.add_row(
            name,
            entry["kind"],
            *(f"{entry[m]:.4f}" for m in METRICS),
            f"{entry['latency_ms']['p50']:.1f}",
            f"{entry['latency_ms']['p95']:.1f}",
        )
    out.print(table)
    for name, entry in result["systems"].items():
        out.print(f"  {name}: {escape(entry['description'])}", soft_wrap=True)
    out.print(
        f"Scored on the first {result['docs_k']} distinct documents of {result['chunk_k']} "
        f"chunks per query (fetch_k {result['fetch_k']}); latency per query includes embedding "
        f"it (median of {result['latency_repeats']} timings of each query). "
        f"{data['skipped_queries']} queries without a relevant judgement were skipped; "
        f"judged queries have a median of {data['relevant_per_query']} relevant documents, "
        f"so Recall@10 can reach at most {data['max_recall@10']:.4f}.",
        soft_wrap=True,
    )
    for note in data["notes"]:
        out.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    out.print(ceiling_message(result["ceiling"]), soft_wrap=True)


def ceiling_message(c: dict[str, Any]) -> str:
    overlap = f"{c['chunk_overlap']:.1%} of the exact top chunks found"
    if c["met"]:
        return (
            f"[green]ceiling:[/] similarity is within {c['tolerance']} nDCG@10 of exact search "
            f"(gap {c['gap']:+.4f}; {overlap})."
        )
    return (
        f"[bold yellow]warning:[/] similarity is {c['gap']:.4f} nDCG@10 below exact search, "
        f"more than the {c['tolerance']} allowed ({overlap}): the vector index's approximate "
        "search misses neighbours. Raise the collection's hnsw ef_search (Chroma's default is "
        "100) or FETCH_K."
    )


def markdown_table(result: dict[str, Any]) -> str:
    header = "| system | " + " | ".join(LABELS[m] for m in METRICS) + " | p50 ms | p95 ms |"
    lines = [header, "|---|" + "---:|" * (len(METRICS) + 2)]
    for name, entry in result["systems"].items():
        kind = "mode" if entry["kind"] == "mode" else "baseline"
        lines.append(
            f"| {name} ({kind}) | "
            + " | ".join(f"{entry[m]:.4f}" for m in METRICS)
            + f" | {entry['latency_ms']['p50']:.1f} | {entry['latency_ms']['p95']:.1f} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(result["systems"])
    metrics = list(METRICS)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f", "#000000"]
    fig, (quality, speed) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]}
    )
    width = 0.8 / len(systems)
    for index, name in enumerate(systems):
        entry = result["systems"][name]
        xs = [m + (index - (len(systems) - 1) / 2) * width for m in range(len(metrics))]
        bars = quality.bar(
            xs,
            [entry[m] for m in metrics],
            width,
            label=f"{name} ({entry['kind']})",
            color=colours[index % len(colours)],
            hatch="//" if entry["kind"] == "baseline" else None,
            edgecolor="white",
        )
        quality.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    best_recall = result["dataset"]["max_recall@10"]
    if best_recall < 0.999:  # many relevant documents per query: 10 results cannot hold them
        at = metrics.index("recall@10")
        quality.hlines(best_recall, at - 0.45, at + 0.45, colors="red", linestyles="dashed")
        quality.text(
            at,
            best_recall + 0.1,
            f"most possible\n{best_recall:.3f}",
            ha="center",
            fontsize=7,
            color="red",
        )
    quality.set_xticks(range(len(metrics)), [LABELS[m] for m in metrics])
    quality.set_ylim(0, 1.12)
    quality.set_ylabel("score (mean over judged queries)")
    quality.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, ncols=len(systems))
    quality.set_title("retrieval quality")

    p50 = [result["systems"][s]["latency_ms"]["p50"] for s in systems]
    p95 = [result["systems"][s]["latency_ms"]["p95"] for s in systems]
    positions = list(range(len(systems)))
    speed.bar([x - 0.2 for x in positions], p50, 0.4, label="p50", color="#4c72b0")
    speed.bar([x + 0.2 for x in positions], p95, 0.4, label="p95", color="#dd8452")
    for x, a, b in zip(positions, p50, p95, strict=True):
        speed.text(x - 0.2, a, f"{a:.0f}", ha="center", va="bottom", fontsize=7)
        speed.text(x + 0.2, b, f"{b:.0f}", ha="center", va="bottom", fontsize=7)
    speed.set_xticks(positions, systems)
    speed.set_ylabel("ms per query (embedding included)")
    speed.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, ncols=2)
    speed.set_title("retrieval latency")

    _save(fig, path, result, result["embedding_model"])


def _save(fig: Any, path: Path, result: dict[str, Any], what: str) -> None:
    """Title a figure with the dataset, `what` was measured and the date; write it to `path`."""
    import matplotlib.pyplot as plt

    data = result["dataset"]
    fig.suptitle(
        f"{data['name']}: {data['evaluated_queries']} queries, {data['documents']:,} documents, "
        f"{what} ({result['date'][:10]})"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def write_results(path: Path, load_at_start: list[float], **results: Any) -> None:
    """A benchmark's result file: the date, the machine and its load, then the figures."""
    machine_info = machine() | {
        "load_average_start": load_at_start,
        "load_average_end": load_average(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"date": now(), "machine": machine_info, **results}, indent=2, ensure_ascii=False
        )
        + "\n",
        encoding="utf-8",
    )


# --- Embedding models side by side (`--embeddings`) ---------------------------------------


def _cell(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


COMPARISON_COLUMNS = (
    "model",
    "nDCG@10",
    "Recall@10",
    "MRR@10",
    "p50 ms",
    "p95 ms",
    "ingest chunks/s",
    "dim",
    "max tokens",
    "index MB",
)


def comparison_cells(row: dict[str, Any]) -> list[str]:
    return [
        row["model"],
        *(f"{row[m]:.4f}" for m in METRICS),
        f"{row['latency_ms']['p50']:.1f}",
        f"{row['latency_ms']['p95']:.1f}",
        _cell(row["ingest_chunks_per_s"], ".1f"),
        _cell(row["dimension"], "d"),
        _cell(row["max_tokens"], "d"),
        _cell(row["index_mb"], ".1f"),
    ]


def print_comparison(result: dict[str, Any]) -> None:
    data = result["dataset"]
    table = Table(
        title=(
            f"{escape(data['name'])} ({data['split']}): {data['evaluated_queries']} judged "
            f"queries, {data['documents']:,} documents; {escape(result['retrieval'])}"
        )
    )
    for index, column in enumerate(COMPARISON_COLUMNS):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in result["models"]:
        table.add_row(*(escape(cell) for cell in comparison_cells(row)))
    # Piped output would get rich's 80 columns and cut every cell: give it the table's width.
    out.print(table, width=None if out.is_terminal else 200)
    out.print(
        f"Latency: one retrieval per query, embedding it included (median of "
        f"{result['latency_repeats']} timings). Ingest: chunks per second through the model's "
        f"embed_documents over {result['throughput_sample']} stored chunks. Index: the "
        "collection's HNSW files. Judged queries have a median of "
        f"{data['relevant_per_query']} relevant documents, so Recall@10 can reach at most "
        f"{data['max_recall@10']:.4f}.",
        soft_wrap=True,
    )
    for row in result["models"]:
        prefixes = row["prefixes"]
        out.print(
            f"  {escape(row['model'])}: {row['chunks']:,} chunks; prefixes "
            f"{prefixes['document']!r} / {prefixes['query']!r} ({escape(prefixes['source'])})",
            soft_wrap=True,
        )
    for note in data["notes"]:
        out.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


def comparison_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| " + " | ".join(COMPARISON_COLUMNS) + " |",
        "|---|" + "---:|" * (len(COMPARISON_COLUMNS) - 1),
    ]
    for row in result["models"]:
        cells = comparison_cells(row)
        lines.append("| `" + cells[0] + "` | " + " | ".join(cells[1:]) + " |")
    return "\n".join(lines)


def plot_comparison(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["models"]
    names = [row["model"] for row in rows]
    metrics = list(METRICS)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    fig, (quality, speed) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]}
    )
    width = 0.8 / len(rows)
    for index, row in enumerate(rows):
        xs = [m + (index - (len(rows) - 1) / 2) * width for m in range(len(metrics))]
        label = f"{row['model']} ({_cell(row['dimension'], 'd')}-d)"
        bars = quality.bar(
            xs, [row[m] for m in metrics], width, label=label, color=colours[index % 6]
        )
        quality.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    quality.set_xticks(range(len(metrics)), [LABELS[m] for m in metrics])
    quality.set_ylim(0, 1.12)
    quality.set_ylabel("score (mean over judged queries)")
    quality.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, ncols=2)
    quality.set_title("retrieval quality (similarity)")

    positions = list(range(len(rows)))
    p50 = [row["latency_ms"]["p50"] for row in rows]
    p95 = [row["latency_ms"]["p95"] for row in rows]
    speed.bar([x - 0.2 for x in positions], p50, 0.4, label="query p50 ms", color="#4c72b0")
    speed.bar([x + 0.2 for x in positions], p95, 0.4, label="query p95 ms", color="#dd8452")
    for x, row in zip(positions, rows, strict=True):
        per_s = row["ingest_chunks_per_s"]
        rate = _cell(per_s, ".1f" if per_s is not None and per_s < 10 else ".0f")
        speed.text(x, max(p95) * 1.02, f"{rate} chunks/s", ha="center", fontsize=7)
    speed.set_xticks(positions, [n.split("/", 1)[-1][:24] for n in names], fontsize=7)
    speed.set_ylabel("ms per query (embedding included)")
    speed.set_ylim(0, max(p95) * 1.15 or 1)
    speed.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, ncols=2)
    speed.set_title("query latency; ingest throughput above")

    _save(fig, path, result, f"{len(rows)} embedding models")
