"""Ollama: embeddings and chat from a model server, with what `langchain-ollama` leaves to the
app (task prefixes, batches, an explicit `num_ctx`, timeouts) and its failures in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx

from app.config import Settings
from app.errors import LocalragError, ProviderError
from app.models.catalog import ollama_facts_from_show, prefixes_for
from app.models.embeddings import ModelEmbeddings, chosen_prefixes, ollama_model_info
from app.models.registry import Availability, ChatCapabilities, Notify, Role

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel


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
    exc: BaseException, settings: Settings, role: Role
) -> LocalragError | None:
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


class OllamaProvider:
    name = "ollama"

    def model_name(self, settings: Settings, role: Role) -> str:
        return (
            settings.ollama_embedding_model if role == "embedding" else settings.ollama_chat_model
        )

    def model_setting(self, role: Role) -> str:
        return "ollama_embedding_model" if role == "embedding" else "ollama_chat_model"

    def availability(self, settings: Settings, role: Role) -> Availability:
        model = self.model_name(settings, role)
        setting = f"{role.upper()}_PROVIDER"
        status = probe_ollama(settings.ollama_base_url, settings.ollama_probe_timeout)
        if not status.reachable:
            detail = f" ({status.problem})" if status.problem else ""
            return Availability(
                False,
                model,
                f"Ollama is not answering at {status.base_url}{detail}",
                "Start it with `ollama serve` (or point OLLAMA_BASE_URL at it), or use the "
                f"offline embedded models with {setting}=local.",
            )
        if not status.has(model):
            return Availability(
                False,
                model,
                f"Ollama at {status.base_url} does not have the model '{model}' "
                f"(`ollama pull {model}`)",
                f"Run `ollama pull {model}`, or use the offline embedded models with "
                f"{setting}=local.",
            )
        return Availability(True, model, f"Ollama at {status.base_url} has {model}")

    def embeddings(self, settings: Settings, notify: Notify) -> ModelEmbeddings:
        model = settings.ollama_embedding_model

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

    def chat_capabilities(self, settings: Settings) -> ChatCapabilities:
        return ChatCapabilities(
            "ollama", settings.ollama_chat_model, settings.ollama_num_ctx, default_k=4, seeded=True
        )

    def chat_model(
        self, settings: Settings, notify: Notify
    ) -> tuple[BaseChatModel, ChatCapabilities]:
        from langchain_ollama import ChatOllama

        model = ChatOllama(
            model=settings.ollama_chat_model,
            base_url=settings.ollama_base_url,
            # Ollama's default window silently drops the start of long prompts.
            num_ctx=settings.ollama_num_ctx,
            num_predict=settings.max_answer_tokens,
            temperature=settings.chat_temperature,
            client_kwargs={"timeout": settings.ollama_timeout},
        )
        return model, self.chat_capabilities(settings)

    def prepare(self, settings: Settings, notify: Notify) -> None:
        """Nothing to prepare: the server holds the model."""

    def explain(self, exc: BaseException, settings: Settings, role: Role) -> LocalragError | None:
        return explain_ollama_failure(exc, settings, role)

    def settings_for(self, model: str) -> str:
        return f"EMBEDDING_PROVIDER=ollama and OLLAMA_EMBEDDING_MODEL={model}"


PROVIDER = OllamaProvider()
