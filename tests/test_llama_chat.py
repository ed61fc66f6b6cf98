"""The embedded chat model (app/models/llama_chat.py): LangChain's standard chat-model tests, then
what the app relies on: one generation at a time, stop sequences, its own token counts, the window,
and the one-time GGUF conversion."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from app.models import llama_chat
from app.models.llama_chat import ChatLlamaCpp, prepare_gguf, prepared_gguf_path
from app.models.local import local_chat_model_path
from chains.core.budget import context_window, token_counter

# The unit suite and the unit tests carry their own mark; the module's default is the
# integration layer (the real SmolLM2 through llama.cpp).
pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def f16_model(shared_model_cache: Path) -> str:
    """The packaged model converted to F16 (its weights exactly) as the app converts it, once per
    test run."""
    return str(prepare_gguf(Path(local_chat_model_path()), shared_model_cache, "F16"))


class TextOnly:
    """Honest capabilities for both standard suites: text in, text out, one GGUF per object."""

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False


class TestChatLlamaCppUnit(TextOnly, ChatModelUnitTests):
    """No model is loaded here: the object is only built and inspected."""

    pytestmark = pytest.mark.unit

    @property
    def chat_model_class(self) -> type[ChatLlamaCpp]:
        return ChatLlamaCpp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model_path": local_chat_model_path(), "model_name": "SmolLM2-135M-Instruct"}


class TestChatLlamaCppIntegration(TextOnly, ChatModelIntegrationTests):
    """The real SmolLM2 through llama.cpp, greedy (the standard params set temperature 0)."""

    pytestmark = pytest.mark.integration

    @pytest.fixture(autouse=True)
    def _model_file(self, f16_model: str) -> None:
        self.model_file = f16_model

    @property
    def chat_model_class(self) -> type[ChatLlamaCpp]:
        return ChatLlamaCpp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model_path": self.model_file, "model_name": "SmolLM2-135M-Instruct"}

    @property
    def returns_usage_metadata(self) -> bool:
        return True  # prompt and answer tokens, counted by the model's own tokenizer


# --- what the app relies on ----------------------------------------------------------------

QUESTION = [
    SystemMessage("Answer in one short sentence."),
    HumanMessage("What is the capital of France?"),
]


@pytest.fixture
def model(f16_model: str) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=f16_model, temperature=0, max_tokens=24, n_ctx=1024)


@pytest.mark.integration
def test_concurrent_calls_take_turns_and_match_sequential_ones(model: ChatLlamaCpp) -> None:
    """Two threads on one llama.cpp context abort the interpreter without the lock; with it,
    each call runs alone and gets the answer it gets alone (greedy decoding)."""
    alone = model.invoke(QUESTION).text
    answers: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            answers.append("".join(c.text for c in model.stream(QUESTION)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    assert answers == [alone] * 3
    assert [m.text for m in model.batch([QUESTION, QUESTION])] == [alone, alone]
    assert not model.loaded.lock.locked()


@pytest.mark.integration
def test_two_objects_on_one_file_share_the_context_and_its_lock(f16_model: str) -> None:
    first = ChatLlamaCpp(model_path=f16_model, n_ctx=1024)
    second = ChatLlamaCpp(model_path=f16_model, n_ctx=1024, temperature=0.5)
    assert first.loaded is second.loaded


@pytest.mark.integration
def test_a_seed_makes_sampled_answers_repeatable_on_the_shared_context(f16_model: str) -> None:
    """The seed goes with each generation, not with the loaded model: copies with other seeds
    share the context, the same seed gives the same answer (invoked or streamed, whatever ran
    in between), and the seeds do not all give one answer."""
    sampled = ChatLlamaCpp(model_path=f16_model, n_ctx=1024, temperature=1.2, max_tokens=16)
    seeded = {seed: sampled.model_copy(update={"seed": seed}) for seed in (1, 2, 3, 4)}
    assert all(m.loaded is sampled.loaded for m in seeded.values())
    first = {seed: m.invoke(QUESTION).text for seed, m in seeded.items()}
    assert len(set(first.values())) > 1
    assert "".join(c.text for c in seeded[3].stream(QUESTION)) == first[3]
    assert seeded[1].invoke(QUESTION).text == first[1]


@pytest.mark.integration
def test_a_stream_stopped_early_releases_the_model(model: ChatLlamaCpp) -> None:
    stream = model.stream(QUESTION)
    next(stream)
    assert model.loaded.lock.locked()
    stream.close()  # what Ctrl-C in the chat does to the generator
    assert not model.loaded.lock.locked()


@pytest.mark.integration
def test_stop_sequences_end_the_answer_before_them(model: ChatLlamaCpp) -> None:
    full = model.invoke(QUESTION).text
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    stopped = model.invoke(QUESTION, stop=[stop]).text
    assert stop not in stopped
    assert full.startswith(stopped)
    streamed = "".join(c.text for c in model.stream(QUESTION, stop=[stop]))
    assert streamed == stopped


@pytest.mark.integration
def test_token_counts_are_the_models_own(model: ChatLlamaCpp) -> None:
    """The prompt count (chat template included) equals what llama.cpp reports evaluating,
    streamed or not; the budget reads the window and the tokenizer from the model."""
    result = model.invoke(QUESTION)
    assert result.usage_metadata is not None
    assert model.get_num_tokens_from_messages(QUESTION) == result.usage_metadata["input_tokens"]
    chunks = list(model.stream(QUESTION))
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed = streamed + chunk
    assert streamed.usage_metadata is not None
    assert streamed.usage_metadata["input_tokens"] == result.usage_metadata["input_tokens"]
    assert streamed.response_metadata["model_name"] == "SmolLM2-135M-Instruct"
    text = "Brindlemoor 巴黎 1887"
    assert model.get_num_tokens(text) == len(
        model.client.tokenize(text.encode(), add_bos=False, special=True)
    )
    assert token_counter(model)(text) == model.get_num_tokens(text)
    assert context_window(model) == model.n_ctx == 1024


# --- the GGUF conversion -------------------------------------------------------------------


@pytest.mark.integration
def test_conversion_is_made_once_and_leaves_no_partial_file(tmp_path: Path) -> None:
    packaged = Path(local_chat_model_path())
    converted = prepare_gguf(packaged, tmp_path, "F16")
    assert converted == prepared_gguf_path(packaged, tmp_path, "F16")
    assert converted.stat().st_size > packaged.stat().st_size  # 16 bits a weight, not ~5
    made = converted.stat().st_mtime_ns
    assert prepare_gguf(packaged, tmp_path, "F16").stat().st_mtime_ns == made
    assert [p.name for p in tmp_path.iterdir()] == [converted.name]
    assert prepare_gguf(packaged, tmp_path, "packaged") == packaged


@pytest.mark.unit
def test_a_failed_conversion_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llama_cpp

    def fail(source: bytes, target: bytes, params: Any) -> int:
        Path(target.decode()).write_bytes(b"half a model")  # what a crash mid-way leaves
        return 1

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", fail)
    with pytest.raises(OSError, match="could not convert"):
        prepare_gguf(Path(local_chat_model_path()), tmp_path, "F32")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown GGUF type"):
        prepare_gguf(Path(local_chat_model_path()), Path("/nonexistent"), "Q2_K")
    assert set(llama_chat.LLAMA_FTYPES) >= {"F16", "F32", "Q8_0"}
