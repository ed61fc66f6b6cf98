"""Any OpenAI-compatible server, for embeddings and chat: vLLM, llama.cpp's server, LM Studio,
Ollama's `/v1`, or a hosted API, through `langchain-openai`.

`auto` considers it only when OPENAI_BASE_URL is set: documents are never sent to a server the
user did not name. The context window comes from the server's model list where it says
(`max_model_len`, vLLM; `context_length` / `max_context_length`, others), else from
CHAT_CONTEXT_TOKENS.
"""

from __future__ import annotations

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


@cache
def list_models(base_url: str, api_key: str, timeout: float) -> tuple[dict[str, Any], str | None]:
    """`GET /models` once per process: {model id: its entry}, and the problem (None when the
    server answered). Never raises."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base_url}/models", headers=headers, timeout=timeout)
        if response.status_code in (401, 403):
            return {}, f"it refused the key (HTTP {response.status_code}; check OPENAI_API_KEY)"
        response.raise_for_status()
        entries = response.json().get("data") or []
        return {str(e.get("id")): e for e in entries if isinstance(e, dict)}, None
    except httpx.TimeoutException:
        return {}, f"no answer within {timeout:g} s"
    except httpx.HTTPStatusError as exc:
        return {}, f"HTTP {exc.response.status_code}"
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return {}, type(exc).__name__


class OpenAIProvider:
    name = "openai"

    def model_name(self, settings: Settings, role: Role) -> str:
        return (
            settings.openai_embedding_model if role == "embedding" else settings.openai_chat_model
        )

    def model_setting(self, role: Role) -> str:
        return "openai_embedding_model" if role == "embedding" else "openai_chat_model"

    def _models(self, settings: Settings) -> tuple[dict[str, Any], str | None]:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        return list_models(settings.openai_base_url, key, settings.ollama_probe_timeout)

    def availability(self, settings: Settings, role: Role) -> Availability:
        model = self.model_name(settings, role)
        setting = f"{role.upper()}_PROVIDER"
        if not settings.openai_base_url:
            return Availability(
                False,
                model,
                "",
                f"Set OPENAI_BASE_URL to the server's /v1 address to use {setting}=openai.",
            )
        models, problem = self._models(settings)
        url = settings.openai_base_url
        if problem is not None:
            return Availability(
                False,
                model,
                f"The OpenAI-compatible server at {url} is not answering ({problem})",
                f"Start it (or point OPENAI_BASE_URL at it), or use {setting}=local.",
            )
        if models and model not in models:
            listed = ", ".join(sorted(models)[:8])
            return Availability(
                False,
                model,
                f"The server at {url} does not serve the model '{model}' (it lists {listed})",
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
                api_key=settings.openai_api_key or "not-needed",  # type: ignore[arg-type]
                # Other servers' models have no tiktoken encoding: send the text as it is.
                check_embedding_ctx_length=False,
                chunk_size=settings.embedding_batch_size,
                timeout=settings.ollama_timeout,
                max_retries=1,
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

    def chat_capabilities(self, settings: Settings) -> ChatCapabilities:
        entry = self._models(settings)[0].get(settings.openai_chat_model, {})
        reported = next(
            (entry[f] for f in WINDOW_FIELDS if isinstance(entry.get(f), int) and entry[f] > 0),
            None,
        )
        window = reported or settings.chat_context_tokens
        if window is None:
            raise ConfigError(
                f"The server at {settings.openai_base_url} does not say the context window of "
                f"'{settings.openai_chat_model}': set CHAT_CONTEXT_TOKENS to it (for example "
                "8192), so long conversations and sources are fitted to it."
            )
        return ChatCapabilities(
            "openai", settings.openai_chat_model, window, default_k=4, seeded=True
        )

    def chat_model(
        self, settings: Settings, notify: Notify
    ) -> tuple[BaseChatModel, ChatCapabilities]:
        from langchain_openai import ChatOpenAI

        capabilities = self.chat_capabilities(settings)
        model = ChatOpenAI(
            model=settings.openai_chat_model,
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key or "not-needed",  # type: ignore[arg-type]
            temperature=settings.chat_temperature,
            max_completion_tokens=settings.max_answer_tokens,
            timeout=settings.ollama_timeout,
            max_retries=1,
            stream_usage=True,
        )
        return model, capabilities

    def prepare(self, settings: Settings, notify: Notify) -> None:
        """Nothing to prepare: the server holds the model."""

    def explain(self, exc: BaseException, settings: Settings, role: Role) -> LocalragError | None:
        import openai

        url = settings.openai_base_url
        model = self.model_name(settings, role)
        setting = f"{role.upper()}_PROVIDER"
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError(
                f"The server at {url} did not answer within {settings.ollama_timeout:g} s "
                "(OLLAMA_TIMEOUT applies to every model server): raise it, or use a smaller model."
            )
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(
                f"The OpenAI-compatible server at {url} is not answering. Start it (or point "
                f"OPENAI_BASE_URL at it), or use {setting}=local."
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderError(f"The server at {url} refused the key: check OPENAI_API_KEY.")
        if isinstance(exc, openai.NotFoundError):
            return ProviderError(
                f"The server at {url} does not serve the model '{model}': set "
                f"OPENAI_{role.upper()}_MODEL to one it serves."
            )
        if isinstance(exc, openai.APIStatusError):
            return ProviderError(
                f"The server at {url} answered HTTP {exc.status_code} for '{model}': {exc.message}"
            )
        return None

    def settings_for(self, model: str) -> str:
        return f"EMBEDDING_PROVIDER=openai and OPENAI_EMBEDDING_MODEL={model}"


PROVIDER = OpenAIProvider()
