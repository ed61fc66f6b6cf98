"""Which provider serves each model (auto, ollama, local), and Ollama's failures in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import httpx

from app.config import Settings
from app.errors import ProviderError

Resolved = Literal["ollama", "local"]


@dataclass(frozen=True)
class OllamaStatus:
    base_url: str
    models: frozenset[str]
    problem: str | None  # None when Ollama answered

    @property
    def reachable(self) -> bool:
        return self.problem is None

    def has(self, model: str) -> bool:
        return any(has_model_name(name, model) for name in self.models)


def has_model_name(available: str, wanted: str) -> bool:
    """`llama3.2` matches `llama3.2:latest`; `llama3.2:1b` matches only itself."""
    return available == wanted or (":" not in wanted and available.startswith(f"{wanted}:"))


@cache
def probe_ollama(base_url: str, timeout: float) -> OllamaStatus:
    """Ask Ollama for its models once per process; never raises."""
    try:
        response = httpx.get(f"{base_url}/api/tags", timeout=timeout)
        response.raise_for_status()
        names = frozenset(m.get("name") or m.get("model", "") for m in response.json()["models"])
    except httpx.TimeoutException:
        return OllamaStatus(base_url, frozenset(), f"no answer within {timeout:g} s")
    except httpx.HTTPStatusError as exc:
        return OllamaStatus(base_url, frozenset(), f"HTTP {exc.response.status_code}")
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return OllamaStatus(base_url, frozenset(), type(exc).__name__)
    return OllamaStatus(base_url, names, None)


def show_ollama_model(settings: Settings, model: str) -> dict[str, Any]:
    """`POST /api/show`: what Ollama knows about a model (its `model_info` holds the context
    length and the embedding length). An Ollama too old to answer gives {}: facts unknown."""
    try:
        response = httpx.post(
            f"{settings.ollama_base_url}/api/show",
            json={"model": model},
            timeout=settings.ollama_probe_timeout,
        )
    except httpx.TimeoutException as exc:
        detail = f"no answer within {settings.ollama_probe_timeout:g} s"
        raise ProviderError(ollama_down_message(settings, "EMBEDDING_PROVIDER", detail)) from exc
    except httpx.HTTPError as exc:
        raise ProviderError(
            ollama_down_message(settings, "EMBEDDING_PROVIDER", type(exc).__name__)
        ) from exc
    if response.status_code == 404:
        raise ProviderError(model_missing_message(settings, "EMBEDDING_PROVIDER", model))
    try:
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


@dataclass(frozen=True)
class ProviderChoice:
    provider: Resolved
    model: str  # the Ollama model name when provider is ollama
    reason: str  # one line for the user: which and why


def choose_provider(settings: Settings, role: Literal["embedding", "chat"]) -> ProviderChoice:
    """Resolve `auto`; an explicit `ollama` is checked up front and never falls back."""
    requested = settings.embedding_provider if role == "embedding" else settings.chat_provider
    model = settings.ollama_embedding_model if role == "embedding" else settings.ollama_chat_model
    setting = f"{role.upper()}_PROVIDER"
    if requested == "local":
        return ProviderChoice("local", model, f"{setting}=local")

    status = probe_ollama(settings.ollama_base_url, settings.ollama_probe_timeout)
    if status.reachable and status.has(model):
        return ProviderChoice("ollama", model, f"Ollama at {status.base_url} has {model}")
    if requested == "ollama":
        if not status.reachable:
            raise ProviderError(ollama_down_message(settings, setting, status.problem))
        raise ProviderError(model_missing_message(settings, setting, model))
    why = (
        f"Ollama is not answering at {status.base_url}"
        if not status.reachable
        else f"Ollama at {status.base_url} does not have {model} (`ollama pull {model}`)"
    )
    return ProviderChoice("local", model, why)


def ollama_down_message(settings: Settings, setting: str, detail: str | None = None) -> str:
    detail = f" ({detail})" if detail else ""
    return (
        f"Ollama is not answering at {settings.ollama_base_url}{detail}. "
        f"Start it with `ollama serve` (or point OLLAMA_BASE_URL at it), "
        f"or use the offline embedded models with {setting}=local."
    )


def model_missing_message(settings: Settings, setting: str, model: str) -> str:
    return (
        f"Ollama at {settings.ollama_base_url} does not have the model '{model}'. "
        f"Run `ollama pull {model}`, or use the offline embedded models with {setting}=local."
    )


def explain_ollama_failure(
    exc: BaseException, settings: Settings, role: Literal["embedding", "chat"]
) -> ProviderError | None:
    """Translate what the ollama client raises into a ProviderError, or None if it is not ours."""
    import ollama  # the core dependency behind langchain-ollama

    setting = f"{role.upper()}_PROVIDER"
    model = settings.ollama_embedding_model if role == "embedding" else settings.ollama_chat_model
    if isinstance(exc, httpx.TimeoutException):
        knob = "lower EMBEDDING_BATCH_SIZE" if role == "embedding" else "lower RETRIEVAL_K"
        return ProviderError(
            f"Ollama at {settings.ollama_base_url} did not answer within "
            f"{settings.ollama_timeout:g} s (OLLAMA_TIMEOUT). A CPU-only server can be slow: "
            f"raise OLLAMA_TIMEOUT, {knob}, or use a smaller model than '{model}'."
        )
    if isinstance(exc, ConnectionError | httpx.ConnectError | httpx.RemoteProtocolError):
        return ProviderError(ollama_down_message(settings, setting))
    if isinstance(exc, ollama.ResponseError):
        text = str(exc.error)
        if exc.status_code == 404 or "not found" in text:
            return ProviderError(model_missing_message(settings, setting, model))
        if "context length" in text:
            knob = (
                f"shorten the question, or for documents lower CHUNK_SIZE (now "
                f"{settings.chunk_size}) or raise OLLAMA_EMBEDDING_NUM_CTX (now "
                f"{settings.ollama_embedding_num_ctx})"
                if role == "embedding"
                else f"raise OLLAMA_NUM_CTX (now {settings.ollama_num_ctx}) or lower RETRIEVAL_K"
            )
            return ProviderError(
                f"Ollama refused the input for '{model}': {text}. "
                f"The text is longer than the model's context window: {knob}."
            )
        return ProviderError(
            f"Ollama at {settings.ollama_base_url} answered HTTP {exc.status_code} for "
            f"'{model}': {text}"
        )
    return None
