"""Settings: defaults, .env, environment overrides, and errors that name the key to fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import Settings, load_settings
from app.errors import ConfigError
from app.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit


def test_env_example_lists_every_setting_once() -> None:
    # A key without a default is written commented out (`# OPENAI_BASE_URL=`).
    listed = re.findall(r"^(?:# )?([A-Z_]+)=", (PROJECT_ROOT / ".env.example").read_text(), re.M)
    assert sorted(listed) == sorted(name.upper() for name in Settings.model_fields)


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings()
    assert settings.embedding_provider == settings.chat_provider == "auto"
    assert settings.ollama_embedding_model == "nomic-embed-text"
    assert settings.ollama_chat_model == "llama3.2"
    assert settings.docs_dir == PROJECT_ROOT / "data" / "docs"


def test_env_file_is_read_and_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CHUNK_SIZE=500\nOLLAMA_CHAT_MODEL=qwen3\nDOCS_DIR=mydocs\n")
    monkeypatch.setitem(Settings.model_config, "env_file", env_file)
    monkeypatch.setenv("OLLAMA_CHAT_MODEL", "mistral")
    settings = Settings()
    assert settings.chunk_size == 500
    assert settings.ollama_chat_model == "mistral"
    assert settings.docs_dir == PROJECT_ROOT / "mydocs"  # relative to the project, not the cwd


def test_invalid_values_give_one_line_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_CHAT_GGUF_TYPE", "Q2")
    monkeypatch.setenv("CHUNK_SIZE", "lots")
    monkeypatch.setenv("OLLAMA_BASE_URL", "localhost:11434")
    monkeypatch.setenv("WATCH_DEBOUNCE", "0.0001")  # an idle watcher would wake 10,000 times/s
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert "  WATCH_DEBOUNCE: Input should be greater than or equal to 0.05" in lines
    assert "  LOCAL_CHAT_GGUF_TYPE: Input should be 'F32', 'F16', 'Q8_0' or 'packaged'" in lines
    assert any(line.startswith("  CHUNK_SIZE: ") for line in lines)
    assert "  OLLAMA_BASE_URL: must start with http:// or https://, got 'localhost:11434'" in lines


def test_providers_are_any_registered_name_and_an_unknown_one_lists_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMBEDDING_PROVIDER / CHAT_PROVIDER name a module of the provider registry (a new provider
    needs no change here), so a wrong name is refused when a model is chosen, with the names."""
    from app.models.registry import PROVIDERS, choose

    monkeypatch.setenv("EMBEDDING_PROVIDER", " OpenAI ")
    monkeypatch.setenv("CHAT_PROVIDER", "bogus")
    settings = load_settings()
    assert (settings.embedding_provider, settings.chat_provider) == ("openai", "bogus")
    assert set(PROVIDERS) == {"ollama", "openai", "local"}
    with pytest.raises(ConfigError, match=r"Unknown provider 'bogus': use auto or one of ollama"):
        choose(settings, "chat")


def test_overlap_must_be_smaller_than_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNK_SIZE", "100")
    monkeypatch.setenv("CHUNK_OVERLAP", "100")
    with pytest.raises(ConfigError, match=r"CHUNK_OVERLAP \(100\) must be smaller"):
        load_settings()


def test_chroma_headers_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMA_HEADERS", '{"X-Token": "abc"}')
    assert Settings().chroma_headers == {"X-Token": "abc"}
    monkeypatch.setenv("CHROMA_HEADERS", "X-Token: abc")
    with pytest.raises(ConfigError, match="CHROMA_HEADERS"):
        load_settings()


def test_a_bad_setting_exits_2_without_traceback(run_module) -> None:
    result = run_module("app.ingest", CHUNK_SIZE="-5")
    assert result.returncode == 2
    assert "CHUNK_SIZE" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = run_module("app.ingest", "--list", EMBEDDING_PROVIDER="bogus")
    assert unknown.returncode == 2, unknown.stderr
    assert "Unknown provider 'bogus'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
