"""Any OpenAI-compatible server, for embeddings and chat: vLLM, llama.cpp's server, LM Studio,
Ollama's `/v1`, or a hosted API, through `langchain-openai`.

`auto` considers it only when OPENAI_BASE_URL is set: documents are never sent to a server the
user did not name. The context window comes from the server's model list where it says
(`max_model_len`, vLLM; `context_length` / `max_context_length`, others), else from
CHAT_CONTEXT_TOKENS; the smaller when both are known. A server that does not list its models
(404 on `/models`) is taken at its word: a missing model shows when it is first asked.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx

from app.config import Settings
from app.errors import ConfigError, LocalragError, ProviderError
from app.models.catalog import prefixes_for
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings, chosen_prefixes
from app.models.registry import Availability, ChatCapabilities, Notify, Role

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

WINDOW_FIELDS = ("max_model_len", "context_length", "max_context_length", "n_ctx")
# `/models` answered with one of these: the server does not list its models (it still serves).
NOT_LISTED = (404, 405, 501)
# The openai client needs a key; a server started without one ignores whatever is sent.
NO_KEY = "not-needed"

_list_lock = threading.Lock()


@cache
def list_models(
    base_url: str, api_key: str, timeout: float
) -> tuple[dict[str, Any] | None, str | None]:
    """`GET /models` once per process: ({model id: its entry} or None when the server does not
    list its models, the problem or None when the server answered). Never raises."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base_url}/models", headers=headers, timeout=timeout)
        if response.status_code in NOT_LISTED:
            return None, None
        response.raise_for_status()
        entries = response.json().get("data") or []
        return {str(e.get("id")): e for e in entries if isinstance(e, dict)}, None
    except httpx.TimeoutException:
        return {}, f"no answer within {timeout:g} s"
    except httpx.HTTPStatusError as exc:
        return {}, f"HTTP {exc.response.status_code}"
    except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
        return {}, type(exc).__name__


def served_name(models: dict[str, Any], wanted: str) -> str | None:
    """The id under which the server lists `wanted`: itself, or with `:latest` (Ollama's /v1
    lists `nomic-embed-text:latest` and serves it as `nomic-embed-text` too)."""
    return next((name for name in (wanted, f"{wanted}:latest") if name in models), None)


def server_message(exc: Any) -> str:
    """What the server said, without the client's "Error code: 400 - " wrapping."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        message = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(message, str) and message:
            return message
    return str(getattr(exc, "message", None) or exc)


def is_context_overflow(exc: BaseException, message: str) -> bool:
    import langchain_core.exceptions

    overflow = getattr(langchain_core.exceptions, "ContextOverflowError", None)  # core >= 1.1
    text = message.lower()
    return (
        (overflow is not None and isinstance(exc, overflow))
        or getattr(exc, "code", None) == "context_length_exceeded"
        or "context length" in text  # vLLM: "This model's maximum context length is ..."
        or "context window" in text
        or "too long" in text
    )


class OpenAIProvider:
    name = "openai"

    def model_name(self, settings: Settings, role: Role) -> str:
        return (
            settings.openai_embedding_model if role == "embedding" else settings.openai_chat_model
        )

    def model_setting(self, role: Role) -> str:
        return "openai_embedding_model" if role == "embedding" else "openai_chat_model"

    def _key(self, settings: Settings) -> str:
        return settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""

    def _models(self, settings: Settings) -> tuple[dict[str, Any] | None, str | None]:
        # One request per process even when the chat model opens in a thread beside the
        # embeddings.
        with _list_lock:
            return list_models(
                settings.openai_base_url, self._key(settings), settings.ollama_probe_timeout
            )

    def availability(self, settings: Settings, role: Role) -> Availability:
        model = self.model_name(settings, role)
        setting = f"{role.upper()}_PROVIDER"
        url = settings.openai_base_url
        if not url:  # never probed: `auto` says nothing of a server the user did not name
            return Availability(
                False,
                model,
                "",
                f"Set OPENAI_BASE_URL to the server's /v1 address to use {setting}=openai.",
            )
        models, problem = self._models(settings)
        if problem in ("HTTP 401", "HTTP 403"):
            return Availability(
                False,
                model,
                f"The OpenAI-compatible server at {url} refused the key ({problem})",
                f"Set OPENAI_API_KEY to a key it accepts, or use {setting}=local.",
            )
        if problem is not None:
            return Availability(
                False,
                model,
                f"The OpenAI-compatible server at {url} is not answering ({problem})",
                f"Start it (or point OPENAI_BASE_URL at it), or use {setting}=local.",
            )
        if models is None:
            return Availability(
                True,
                model,
                f"the OpenAI-compatible server at {url} (it does not list its models; "
                f"asking it for {model})",
            )
        if served_name(models, model) is None:
            listed = ", ".join(sorted(models)[:8]) or "no models"
            return Availability(
                False,
                model,
                f"The OpenAI-compatible server at {url} does not serve the model '{model}' "
                f"(it lists {listed})",
                f"Set OPENAI_{role.upper()}_MODEL to one it serves, or use {setting}=local.",
            )
        return Availability(True, model, f"the OpenAI-compatible server at {url} serves {model}")

    def embeddings(self, settings: Settings, notify: Notify) -> ModelEmbeddings:
        model = settings.openai_embedding_model

        def load() -> Embeddings:
            from langchain_openai import OpenAIEmbeddings

            return OpenAIEmbeddings(
                model=model,
                base_url=settings.openai_base_url,
                api_key=self._key(settings) or NO_KEY,  # type: ignore[arg-type]
                # Other servers' models have no tiktoken encoding: send the text as it is.
                check_embedding_ctx_length=False,
                chunk_size=settings.embedding_batch_size,
                timeout=settings.ollama_timeout,
                # No retry, as for Ollama: a timeout is one OLLAMA_TIMEOUT, not two.
                max_retries=0,
            )

        prefixes = chosen_prefixes(settings, prefixes_for(model))
        return ModelEmbeddings(
            EmbeddingModelInfo(
                "openai", model, prefixes.document, prefixes.query, prefix_source=prefixes.source
            ),
            load,
            batch_size=settings.embedding_batch_size,
            explain=lambda exc: self.explain(exc, settings, "embedding"),
        )

    def reported_window(self, settings: Settings) -> int | None:
        """The chat model's context window as the server lists it, or None."""
        models = self._models(settings)[0] or {}
        entry = models.get(served_name(models, settings.openai_chat_model) or "", {})
        return next(
            (entry[f] for f in WINDOW_FIELDS if isinstance(entry.get(f), int) and entry[f] > 0),
            None,
        )

    def chat_capabilities(self, settings: Settings) -> ChatCapabilities:
        reported = self.reported_window(settings)
        configured = settings.chat_context_tokens
        known = [w for w in (reported, configured) if w is not None]
        if not known:
            raise ConfigError(
                f"The server at {settings.openai_base_url} does not say the context window of "
                f"'{settings.openai_chat_model}': set CHAT_CONTEXT_TOKENS to it (for example "
                "8192), so long conversations and sources are fitted to it."
            )
        return ChatCapabilities(
            "openai", settings.openai_chat_model, min(known), default_k=4, seeded=True
        )

    def chat_model(
        self, settings: Settings, notify: Notify
    ) -> tuple[BaseChatModel, ChatCapabilities]:
        from langchain_openai import ChatOpenAI

        capabilities = self.chat_capabilities(settings)
        model = ChatOpenAI(
            model=settings.openai_chat_model,
            base_url=settings.openai_base_url,
            api_key=self._key(settings) or NO_KEY,  # type: ignore[arg-type]
            temperature=settings.chat_temperature,
            max_completion_tokens=settings.max_answer_tokens,
            timeout=settings.ollama_timeout,
            max_retries=0,
            stream_usage=True,
        )
        if self.reported_window(settings) is not None and "profile" in type(model).model_fields:
            # The budget takes the model's own window over LangChain's profile of the name
            # (a server's `gpt-4o-mini` may be an alias with a smaller window).
            model.profile = {
                **(model.profile or {}),
                "max_input_tokens": capabilities.context_window,
            }
        return model, capabilities

    def prepare(self, settings: Settings, notify: Notify) -> None:
        """Nothing to prepare: the server holds the model."""

    def explain(self, exc: BaseException, settings: Settings, role: Role) -> LocalragError | None:
        import openai

        url = settings.openai_base_url
        model = self.model_name(settings, role)
        setting = f"{role.upper()}_PROVIDER"
        if isinstance(exc, openai.APITimeoutError):
            knob = "lower EMBEDDING_BATCH_SIZE" if role == "embedding" else "lower RETRIEVAL_K"
            return ProviderError(
                f"The server at {url} did not answer within {settings.ollama_timeout:g} s "
                f"(OLLAMA_TIMEOUT applies to every model server): raise it, {knob}, or use a "
                f"smaller model than '{model}'."
            )
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(
                f"The OpenAI-compatible server at {url} is not answering. Start it (or point "
                f"OPENAI_BASE_URL at it), or use {setting}=local."
            )
        if not isinstance(exc, openai.APIStatusError):
            return None
        said = server_message(exc)
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderError(
                f"The server at {url} refused the key (HTTP {exc.status_code}: {said}): set "
                "OPENAI_API_KEY to a key it accepts."
            )
        if isinstance(exc, openai.NotFoundError):
            return ProviderError(
                f"The server at {url} does not serve the model '{model}' ({said}): set "
                f"OPENAI_{role.upper()}_MODEL to one it serves, or check that OPENAI_BASE_URL "
                "is its API address (it usually ends in /v1)."
            )
        if isinstance(exc, openai.RateLimitError):
            knob = "lower EMBEDDING_BATCH_SIZE" if role == "embedding" else "ask again later"
            return ProviderError(
                f"The server at {url} is limiting requests (HTTP 429: {said}): wait a little "
                f"and run again, or {knob}."
            )
        if isinstance(exc, openai.BadRequestError) and is_context_overflow(exc, said):
            knob = (
                f"lower CHUNK_SIZE (now {settings.chunk_size}) and run `python -m app.ingest "
                "--rebuild`"
                if role == "embedding"
                else "set CHAT_CONTEXT_TOKENS to the model's window, or lower RETRIEVAL_K"
            )
            return ProviderError(
                f"The server at {url} refused the input for '{model}': {said}. The text is "
                f"longer than the model's context window: {knob}."
            )
        return ProviderError(
            f"The server at {url} answered HTTP {exc.status_code} for '{model}': {said}"
        )

    def settings_for(self, model: str) -> str:
        return f"EMBEDDING_PROVIDER=openai and OPENAI_EMBEDDING_MODEL={model}"


PROVIDER = OpenAIProvider()
