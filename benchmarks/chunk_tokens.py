"""How many tokens are in a chunk, for a Chinese and an English document, with the app's splitter
and with the splitter it replaced (LangChain's default separators, a chunk size in characters).

    python benchmarks/chunk_tokens.py

Each document is one sample set's text (every file parsed as ingest parses it, joined with blank
lines): data/docs-zh (Chinese) and data/docs (English); and the same with each file's lines
joined into one long paragraph, where a splitter without sentence separators must cut inside
sentences. Both are split with the default
settings (CHUNK_SIZE 800, CHUNK_OVERLAP 120) and the embedded MiniLM's 256-word-piece cap, then
every chunk is counted by MiniLM's tokenizer (what the embedding model reads), by SmolLM2's (what
the embedded chat model reads) and by `estimate_tokens` (what the budget assumes when no
tokenizer runs). Writes benchmarks/results/chunk_tokens.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.config import load_settings
from app.console import status
from app.evaluation.report import machine, now
from app.indexing.splitter import ChunkPolicy, split_documents
from app.models.local import local_chat_model_path, local_embeddings
from app.paths import SAMPLE_DOCS_DIR, SAMPLE_DOCS_ZH_DIR
from chains.core.budget import estimate_tokens
from loaders.parsers import parse_file

RESULTS = Path(__file__).resolve().parent / "results" / "chunk_tokens.json"


def document(folder: Path, long_paragraphs: bool) -> Document:
    """The sample set as one document; with `long_paragraphs`, each file's lines are joined
    into one paragraph (Chinese without a space, English with one), as text pasted from a web
    page or a PDF often is: then only sentence ends are left to cut at."""
    texts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        for d in parse_file(path, path.relative_to(folder).as_posix()):
            lines = [line.strip() for line in d.page_content.splitlines() if line.strip()]
            glue = ("" if folder == SAMPLE_DOCS_ZH_DIR else " ") if long_paragraphs else "\n"
            texts.append(glue.join(lines))
    return Document("\n\n".join(texts), metadata={"source": folder.name})


def old_split(doc: Document, policy: ChunkPolicy) -> list[str]:
    """The splitter before issue 10: default separators, length in characters, the same cap."""
    count, limit = policy.count_tokens, policy.max_tokens
    assert count is not None
    assert limit is not None
    coarse = RecursiveCharacterTextSplitter(
        chunk_size=policy.chunk_size, chunk_overlap=policy.chunk_overlap
    ).split_text(doc.page_content)
    fine = RecursiveCharacterTextSplitter(
        chunk_size=limit, chunk_overlap=min(32, limit // 8), length_function=count
    )
    return [p for c in coarse for p in (fine.split_text(c) if count(c) > limit else [c])]


def cut_mid_sentence(text: str, chunks: list[str]) -> int:
    """Chunks that end inside a sentence: the source goes on on the same line after a character
    that ends no sentence or clause."""
    cuts, position = 0, 0
    for chunk in chunks:
        start = text.find(chunk, position)
        if start < 0:  # re-split pieces can differ in whitespace; skip what cannot be located
            continue
        end, position = start + len(chunk), start + 1
        if end < len(text) and text[end] not in "\r\n" and text[end - 1] not in ENDS:
            cuts += 1
    return cuts


ENDS = "。！？；，、.!?;:,"


def describe(
    text: str, chunks: list[str], counters: dict[str, Callable[[str], int]]
) -> dict[str, object]:
    row: dict[str, object] = {
        "chunks": len(chunks),
        "characters": summary([len(c) for c in chunks]),
    }
    for name, count in counters.items():
        row[name] = summary([count(c) for c in chunks])
    row["ends_mid_sentence"] = cut_mid_sentence(text, chunks)
    return row


def summary(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (JSON)")
    args = parser.parse_args()

    from llama_cpp import Llama

    settings = load_settings()
    embeddings = local_embeddings(settings, status)
    assert embeddings.count_tokens is not None
    vocab = Llama(model_path=local_chat_model_path(), vocab_only=True, verbose=False)
    counters: dict[str, Callable[[str], int]] = {
        "minilm_tokens": embeddings.count_tokens,
        "smollm2_tokens": lambda t: len(vocab.tokenize(t.encode(), add_bos=False, special=True)),
        "estimate_tokens": estimate_tokens,
    }
    policy = ChunkPolicy(
        settings.chunk_size,
        settings.chunk_overlap,
        embeddings.info.max_tokens,
        embeddings.count_tokens,
    )
    results: dict[str, dict[str, object]] = {}
    for language, folder, long_paragraphs in (
        ("Chinese", SAMPLE_DOCS_ZH_DIR, False),
        ("Chinese, a paragraph per file", SAMPLE_DOCS_ZH_DIR, True),
        ("English", SAMPLE_DOCS_DIR, False),
        ("English, a paragraph per file", SAMPLE_DOCS_DIR, True),
    ):
        doc = document(folder, long_paragraphs)
        results[language] = {
            "characters": len(doc.page_content),
            "now": describe(
                doc.page_content,
                [c.page_content for c in split_documents([doc], policy)],
                counters,
            ),
            "before": describe(doc.page_content, old_split(doc, policy), counters),
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"date": now(), "machine": machine(), "documents": results}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(
        "| document | splitter | chunks | characters | MiniLM tokens | SmolLM2 tokens | "
        "estimate | ends mid-sentence |"
    )
    print("|---|---|---:|---|---|---|---|---:|")
    for language, entry in results.items():
        for which in ("before", "now"):
            row = entry[which]
            assert isinstance(row, dict)
            cells = [
                "{min}-{max} (median {median:g})".format(**row[k])
                for k in ("characters", "minilm_tokens", "smollm2_tokens", "estimate_tokens")
            ]
            print(
                f"| {language} ({entry['characters']:,} characters) | {which} | {row['chunks']} | "
                + " | ".join(cells)
                + f" | {row['ends_mid_sentence']} |"
            )


if __name__ == "__main__":
    main()
