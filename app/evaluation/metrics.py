"""nDCG@k, Recall@k and MRR@k over graded judgements, and latency percentiles.

nDCG uses the gains of TREC/BEIR tooling (pytrec_eval): gain 2^rel - 1 at rank r (1-based),
discounted by log2(r + 1), divided by the same sum over the ideal ordering of the judged
documents. A document counts as relevant for Recall and MRR when its grade is above 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def dcg(grades: Sequence[int]) -> float:
    return sum((2**g - 1) / math.log2(rank + 1) for rank, g in enumerate(grades, 1) if g > 0)


def ndcg_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([judged.get(doc, 0) for doc in ranked[:k]]) / ideal


def recall_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    relevant = {doc for doc, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    for rank, doc in enumerate(ranked[:k], 1):
        if judged.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


METRICS = {"ndcg@10": ndcg_at_k, "recall@10": recall_at_k, "mrr@10": mrr_at_k}


@dataclass
class Scores:
    means: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluated: int = 0
    skipped: int = 0  # queries with no relevant judgement: left out of every mean


def judged_queries(qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str]) -> list[str]:
    """The queries that can be scored: at least one document judged relevant."""
    return [q for q in query_ids if any(g > 0 for g in qrels.get(q, {}).values())]


def evaluate(
    runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int = 10
) -> Scores:
    """Mean of each metric over the queries in `runs` that have a relevant judgement.

    `runs` maps a query id to its ranked document ids (best first, no repeats).
    """
    per_query: dict[str, dict[str, float]] = {}
    skipped = 0
    for query_id, ranked in runs.items():
        judged = qrels.get(query_id, {})
        if not any(g > 0 for g in judged.values()):
            skipped += 1
            continue
        per_query[query_id] = {name: metric(ranked, judged, k) for name, metric in METRICS.items()}
    means = {
        name: (sum(q[name] for q in per_query.values()) / len(per_query) if per_query else 0.0)
        for name in METRICS
    }
    return Scores(means, per_query, len(per_query), skipped)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks, as numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def dedupe(doc_ids: Sequence[str | None], k: int = 10) -> list[str]:
    """Chunks to documents: each document once, at its best rank, the first k."""
    seen: dict[str, None] = {}
    for doc_id in doc_ids:
        if doc_id is not None and doc_id not in seen:
            seen[doc_id] = None
            if len(seen) == k:
                break
    return list(seen)
