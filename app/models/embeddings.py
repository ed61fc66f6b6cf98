"""The embedding model every provider returns: any LangChain `Embeddings`, plus the task
prefixes, batches and failure messages the integrations leave to the app, and what the store
records about the model (`EmbeddingModelInfo`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.embeddings import Embeddings

from app.config import Settings
from app.models.catalog import OllamaModelFacts, TaskPrefixes, prefixes_for

# Padded tokens a batch may hold per row of EMBEDDING_BATCH_SIZE: a batch of long texts holds
# fewer of them, so the work per batch stays even (all-MiniLM-L6-v2 on MS MARCO passages:
# 1.03x their real tokens instead of 1.38x when batched by count in character order).
TOKENS_PER_ROW = 128


def token_batches(
    lengths: Sequence[int], max_rows: int, tokens_per_row: int = TOKENS_PER_ROW
) -> list[list[int]]:
    """Indices of `lengths` (tokens per text) in batches of similar length, shortest first:
    each batch holds at most `max_rows` rows and, padded to its longest, at most
    `max_rows * tokens_per_row` tokens (one row always fits, however long)."""
    budget = max_rows * tokens_per_row
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for index in order:
        # Sorted shortest first: the text added is the batch's longest.
        if batch and (len(batch) >= max_rows or (len(batch) + 1) * lengths[index] > budget):
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """What the store records about the model that made its vectors, and what the splitter and
    the report need to know about it. Facts come from the model (`app.models.catalog`)."""

    provider: str
    name: str
    document_prefix: str = ""
    query_prefix: str = ""
    max_tokens: int | None = None  # tokens one input may have, specials included
    # Cosine relevance below which a chunk does not answer a question; 0 when not measured
    # (see MEASURED_THRESHOLDS).
    default_threshold: float = 0.0
    # Scripts the model was trained on (app.text.writing_systems names: LATIN, CJK, HANGUL...);
    # None when multilingual or not recorded. A question mostly in other scripts is answered
    # from the keyword index: the model's vector for it is noise (MiniLM on the Chinese sample
    # set: nDCG@10 0.48, against 0.89 for keyword search).
    scripts: frozenset[str] | None = None
    dimension: int | None = None  # None: learned from the first vector
    prefix_source: str = ""
    prefixes_built_in: bool = False  # the model's engine adds them: ModelEmbeddings must not

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.name}"


def chosen_prefixes(settings: Settings, model_prefixes: TaskPrefixes) -> TaskPrefixes:
    """The model's prefixes, unless EMBEDDING_QUERY_PREFIX / EMBEDDING_DOCUMENT_PREFIX say
    otherwise (`none` for no prefix)."""
    query, document = settings.embedding_query_prefix, settings.embedding_document_prefix
    if query is None and document is None:
        return model_prefixes

    def pick(value: str | None, default: str) -> str:
        return default if value is None else ("" if value.lower() == "none" else value)

    return TaskPrefixes(
        pick(document, model_prefixes.document),
        pick(query, model_prefixes.query),
        "EMBEDDING_QUERY_PREFIX / EMBEDDING_DOCUMENT_PREFIX",
    )


def ollama_model_info(
    model: str,
    num_ctx: int,
    facts: OllamaModelFacts | None = None,
    prefixes: TaskPrefixes | None = None,
) -> EmbeddingModelInfo:
    # Ollama reads `nomic-embed-text` as `nomic-embed-text:latest`: one model, one collection.
    name = model.removesuffix(":latest")
    prefixes = prefixes or prefixes_for(name)
    facts = facts or OllamaModelFacts(None, None)
    # Ollama runs the model with the smaller of num_ctx and the model's own context length.
    max_tokens = min(num_ctx, facts.context_length or num_ctx)
    return EmbeddingModelInfo(
        "ollama",
        name,
        prefixes.document,
        prefixes.query,
        max_tokens,
        dimension=facts.embedding_length,
        prefix_source=prefixes.source,
    )


class ModelEmbeddings(Embeddings):
    """Any LangChain `Embeddings` plus what the integrations leave to the app.

    Adds the model's task prefixes, sends documents in batches (OllamaEmbeddings would send a
    whole ingest in one request), loads the model only when a text first needs embedding, and
    turns provider failures into errors a person can act on.
    """

    def __init__(
        self,
        info: EmbeddingModelInfo,
        load: Callable[[], Embeddings],
        *,
        batch_size: int,
        explain: Callable[[BaseException], Exception | None] = lambda exc: None,
        count_tokens: Callable[[str], int] | None = None,
        load_query: Callable[[], Embeddings] | None = None,
    ) -> None:
        self.info = info
        self.batch_size = batch_size
        self.count_tokens = count_tokens
        self._load = load
        self._load_query = load_query
        self._explain = explain
        self._model: Embeddings | None = None
        self._query_model: Embeddings | None = None

    @property
    def model(self) -> Embeddings:
        """What embeds documents (ingest)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    @property
    def loaded_model(self) -> Embeddings | None:
        return self._model

    @property
    def query_model(self) -> Embeddings:
        """What embeds questions: the same vectors, from a runtime that may start faster."""
        if self._query_model is None:
            self._query_model = self._load_query() if self._load_query else self.model
        return self._query_model

    def prepare_queries(self) -> None:
        """Get the query runtime ready now (an ingest ends with this, while torch is loaded)."""
        _ = self.query_model

    @property
    def batches_by_tokens(self) -> bool:
        """True when `document_batches` groups by the model's own token counts (an embedded
        model): each batch is then what the model should run as it is."""
        return self._token_counter() is not None

    def document_batches(self, texts: Sequence[str]) -> list[list[int]]:
        """How the ingest groups `texts` into the batches it sends: by tokens when the model's
        tokenizer is known (the embedded models), else by count in order of length."""
        lengths = self._token_lengths([self._document_prefix + t for t in texts])
        if lengths is not None:
            return token_batches(lengths, self.batch_size)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _token_lengths(self, texts: list[str]) -> list[int] | None:
        counter = self._token_counter()
        return list(counter(texts)) if counter is not None else None

    def _token_counter(self) -> Callable[[list[str]], Sequence[int]] | None:
        """The model's own batch token counter, else one from `count_tokens`, else None."""
        token_lengths = getattr(self.model, "token_lengths", None)
        if callable(token_lengths):
            return cast(Callable[[list[str]], Sequence[int]], token_lengths)
        count = self.count_tokens
        if count is not None:
            return lambda texts: [count(t) for t in texts]
        return None

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [self._document_prefix + t for t in texts[start : start + self.batch_size]]
            vectors.extend(self._guarded(self.model.embed_documents, batch))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._guarded(self.query_model.embed_query, self._query_prefix + text)

    @property
    def _document_prefix(self) -> str:
        return "" if self.info.prefixes_built_in else self.info.document_prefix

    @property
    def _query_prefix(self) -> str:
        return "" if self.info.prefixes_built_in else self.info.query_prefix

    def _guarded(self, call: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return call(arg)
        except Exception as exc:
            explained = self._explain(exc)
            if explained is None:
                raise
            raise explained from exc
