"""A LangChain chat model over llama-cpp-python, run in-process (the embedded chat model).

Ours rather than langchain-community's `ChatLlamaCpp` (that package is sunset and archived).
What it adds: prompts are evaluated `n_batch` tokens at a time (512, not 8); one generation at a
time per loaded model, because a llama.cpp context is not thread-safe and concurrent calls
abort the interpreter (so `batch`, `abatch` and parallel branches are safe); token counting
with the model's own tokenizer and chat template; `n_ctx` for the token budget.

A GBNF grammar (`grammar=`, as a field or per call: `model.bind(grammar=...)`) constrains what
the model may write: the follow-up rewrite uses one that allows a single line ending in "?".

`prepare_gguf` converts the packaged GGUF file to a type that evaluates prompts faster on CPU,
once, into a cache directory (written to a temporary name and renamed).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

if TYPE_CHECKING:
    from llama_cpp import Llama

# llama.cpp's llama_ftype numbers for the types a model may be converted to.
LLAMA_FTYPES = {"F32": 0, "F16": 1, "Q4_1": 3, "Q8_0": 7}


@dataclass
class LoadedModel:
    """One llama.cpp model and context, and the lock that serialises its generations."""

    llama: Llama
    lock: threading.Lock
    template: Any  # the GGUF's chat template as a llama_cpp formatter, or None


_loaded: dict[tuple[Any, ...], LoadedModel] = {}
_loading = threading.Lock()


def load_model(model_path: str, *, n_ctx: int, n_batch: int, n_threads: int | None) -> LoadedModel:
    """Load once per process for the same file and context settings: every chat model object
    on that file shares the context, and so the lock. The seed is not a load setting: each
    generation passes its own (so copies of a model with other seeds share the context)."""
    key = (os.path.realpath(model_path), n_ctx, n_batch, n_threads)
    with _loading:
        if key not in _loaded:
            from llama_cpp import Llama, llama_chat_format

            with without_weight_repacking():
                llama = Llama(
                    model_path=model_path,
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    verbose=False,
                )
            template = None
            source = llama.metadata.get("tokenizer.chat_template")
            if source:
                vocab = llama._model  # the token strings the template needs
                template = llama_chat_format.Jinja2ChatFormatter(
                    template=source,
                    eos_token=vocab.token_get_text(vocab.token_eos()),
                    bos_token=vocab.token_get_text(vocab.token_bos()),
                )
            if not _loaded:
                atexit.register(_close_all)
            _loaded[key] = LoadedModel(llama, threading.Lock(), template)
        return _loaded[key]


def _close_all() -> None:
    """Free the models while llama_cpp still has its functions: freed later, at interpreter
    teardown, each prints a TypeError traceback."""
    with _loading:
        for loaded in _loaded.values():
            # A generation still running gets time to finish its step; one that does not is
            # left alone (closing under it would crash; the traceback is the lesser evil).
            if loaded.lock.acquire(timeout=10):
                loaded.llama.close()
                loaded.lock.release()
        _loaded.clear()


@contextlib.contextmanager
def without_weight_repacking() -> Iterator[None]:
    """Load the model without llama.cpp's extra buffer types (weight repacking for AMX and the
    like). On a virtual machine whose CPU advertises AMX but whose hypervisor does not enable
    it, the repacked path dies on its first `ldtilecfg` (SIGSEGV in libggml-cpu) for Q4 and Q8
    types; the plain CPU path runs everywhere. llama-cpp-python has no argument for it, so the
    default model parameters are adjusted while the model loads (under `_loading`)."""
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


class ChatLlamaCpp(BaseChatModel):
    """A GGUF chat model run in-process by llama.cpp. Text in, text out: no tools, no images.

    Example:
        model = ChatLlamaCpp(model_path="SmolLM2-135M-Instruct.Q4_1.gguf", n_ctx=2048)
        model.invoke("Hello")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: str = Field(description="The GGUF file.")
    model_name: str | None = Field(
        default=None, description="The name traces and responses carry; default: the file's stem."
    )
    n_ctx: int = Field(
        default=2048, ge=16, description="Context window: prompt and answer share it."
    )
    n_batch: int = Field(
        default=512, ge=1, description="Prompt tokens evaluated per step (8 is about 5x slower)."
    )
    n_threads: int | None = Field(
        default=None, description="CPU threads; default: llama.cpp's choice."
    )
    max_tokens: int | None = Field(default=256, description="Most tokens an answer may have.")
    temperature: float = Field(default=0.8, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = 0.95
    top_k: int = 40
    # 1.1 as llama.cpp's own CLI and langchain-community's wrapper: at 1.0, SmolLM2 loops on
    # some sample questions until max_tokens (40 s answers).
    repeat_penalty: float = 1.1
    stop: list[str] | None = Field(default=None, description="Generation stops at any of these.")
    seed: int | None = Field(
        default=None,
        description="Sampling seed, for repeatable answers at a temperature above 0; "
        "default: llama.cpp's own sequence.",
    )
    streaming: bool = Field(default=False, description="Whether invoke streams under the hood.")
    grammar: str | None = Field(
        default=None,
        description="A GBNF grammar every generation must follow (llama.cpp's grammar format); "
        "a call may pass its own (`grammar=`).",
    )

    _model: LoadedModel | None = PrivateAttr(None)

    # --- the loaded model ------------------------------------------------------------------

    @property
    def loaded(self) -> LoadedModel:
        if self._model is None:
            self._model = load_model(
                self.model_path,
                n_ctx=self.n_ctx,
                n_batch=self.n_batch,
                n_threads=self.n_threads,
            )
        return self._model

    @property
    def client(self) -> Llama:
        """The llama_cpp.Llama object (its `tokenize` counts tokens for the budget)."""
        return self.loaded.llama

    @property
    def name_for_traces(self) -> str:
        return self.model_name or Path(self.model_path).name.split(".")[0]

    # --- token counting ------------------------------------------------------------------

    def get_token_ids(self, text: str) -> list[int]:
        """The model's own tokenizer (LangChain's default would load GPT-2's from the hub)."""
        return list(self.client.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def get_num_tokens(self, text: str) -> int:
        return len(self.get_token_ids(text))

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Tokens of the prompt exactly as the model will see it: chat template included."""
        prompt = self._render(messages)
        if prompt is None:
            return sum(self.get_num_tokens(m.text) + 8 for m in messages)
        return len(self.client.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))

    def _render(self, messages: list[BaseMessage]) -> str | None:
        template = self.loaded.template
        if template is None:
            return None
        return str(template(messages=[_as_dict(m) for m in messages]).prompt)

    # --- generation ----------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            chunks = list(self._stream(messages, stop, run_manager, **kwargs))
            message: BaseMessage = _merge(chunks)
            return ChatResult(generations=[ChatGeneration(message=message)])
        loaded = self.loaded
        with loaded.lock:
            response: Any = loaded.llama.create_chat_completion(
                messages=_as_dicts(messages), **self._params(stop, kwargs)
            )
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        message = AIMessage(
            content=choice["message"].get("content") or "",
            usage_metadata=UsageMetadata(
                input_tokens=usage.get("prompt_tokens", 0),
                output_tokens=usage.get("completion_tokens", 0),
                total_tokens=usage.get("total_tokens", 0),
            ),
            response_metadata={
                "model_name": self.name_for_traces,
                "finish_reason": choice.get("finish_reason"),
                "model_provider": "llamacpp",
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        loaded = self.loaded
        params = self._params(stop, kwargs)
        prompt_tokens = self.get_num_tokens_from_messages(messages)
        text, finish_reason = "", None
        # Held until the generator finishes or is closed (Ctrl-C, a consumer that stops
        # early): a threading.Lock, so async callers may release it from another thread.
        with loaded.lock:
            stream: Any = loaded.llama.create_chat_completion(
                messages=_as_dicts(messages), stream=True, **params
            )
            for part in stream:
                choice = part["choices"][0]
                finish_reason = choice.get("finish_reason") or finish_reason
                token = choice.get("delta", {}).get("content") or ""
                if not token:
                    continue
                text += token
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
                if run_manager:
                    run_manager.on_llm_new_token(token, chunk=chunk)
                yield chunk
        output_tokens = self.get_num_tokens(text)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=UsageMetadata(
                    input_tokens=prompt_tokens,
                    output_tokens=output_tokens,
                    total_tokens=prompt_tokens + output_tokens,
                ),
                response_metadata={
                    "model_name": self.name_for_traces,
                    "finish_reason": finish_reason,
                    "model_provider": "llamacpp",
                },
                chunk_position="last",
            )
        )

    def _params(self, stop: list[str] | None, overrides: dict[str, Any]) -> dict[str, Any]:
        if overrides.get("model", self.name_for_traces) != self.name_for_traces:
            raise ValueError(
                f"This ChatLlamaCpp runs {self.name_for_traces} only; for another model, make "
                "another ChatLlamaCpp with its model_path."
            )
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "max_tokens": self.max_tokens,
            "stop": [*(self.stop or []), *(stop or [])],
        }
        if self.seed is not None:
            params["seed"] = self.seed
        for key in ("temperature", "top_p", "top_k", "repeat_penalty", "max_tokens", "seed"):
            if key in overrides:
                params[key] = overrides[key]
        grammar = overrides.get("grammar", self.grammar)
        if grammar:
            params["grammar"] = compiled_grammar(grammar)
        return params

    # --- identity ------------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "llamacpp-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.name_for_traces,
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="llamacpp",
            ls_model_name=kwargs.get("model", self.name_for_traces),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if self.max_tokens is not None:
            params["ls_max_tokens"] = kwargs.get("max_tokens", self.max_tokens)
        if stop or self.stop:
            params["ls_stop"] = [*(self.stop or []), *(stop or [])]
        return params


@functools.lru_cache(maxsize=16)
def compiled_grammar(text: str) -> Any:
    """A GBNF grammar parsed once (llama_cpp.LlamaGrammar); a ValueError says what is wrong."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(text, verbose=False)


def _as_dicts(messages: list[BaseMessage]) -> Any:
    return [_as_dict(m) for m in messages]


def _as_dict(message: BaseMessage) -> dict[str, Any]:
    """A message as llama-cpp-python's OpenAI-style dict; text content only."""
    if isinstance(message, SystemMessage):
        role = "system"
    elif isinstance(message, HumanMessage):
        role = "user"
    elif isinstance(message, AIMessage):
        role = "assistant"
    elif isinstance(message, ToolMessage):
        role = "tool"
    elif isinstance(message, ChatMessage):
        role = message.role
    else:
        raise ValueError(f"ChatLlamaCpp cannot send a {type(message).__name__}")
    return {"role": role, "content": message.text}


def _merge(chunks: list[ChatGenerationChunk]) -> AIMessage:
    merged = chunks[0].message
    for chunk in chunks[1:]:
        merged = merged + chunk.message
    assert isinstance(merged, AIMessageChunk)
    return AIMessage(
        content=merged.content,
        usage_metadata=merged.usage_metadata,
        response_metadata=merged.response_metadata,
    )


# --- faster GGUF types ---------------------------------------------------------------------


def prepared_gguf_path(source: Path, cache_dir: Path, gguf_type: str) -> Path:
    """Named after the packaged file's size and time, so a new package version converts anew."""
    stat = source.stat()
    return cache_dir / f"{source.stem}.{stat.st_size}-{stat.st_mtime_ns}.{gguf_type}.gguf"


def prepare_gguf(source: Path, cache_dir: Path, gguf_type: str) -> Path:
    """`source` converted to `gguf_type` in `cache_dir`, made once; "packaged" is `source`.

    llama.cpp re-quantizes in-process (`llama_model_quantize`, allow_requantize), so a type
    with more precision than the packaged file gets its rounding, not the original weights:
    the answers are the packaged file's, the arithmetic is faster on CPUs without fast int8
    dot products."""
    if gguf_type == "packaged":
        return source
    if gguf_type not in LLAMA_FTYPES:
        raise ValueError(f"unknown GGUF type {gguf_type!r}: one of {', '.join(LLAMA_FTYPES)}")
    target = prepared_gguf_path(source, cache_dir, gguf_type)
    if target.is_file():
        return target
    import llama_cpp

    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=cache_dir, prefix=target.name, suffix=".partial")
    os.close(handle)
    partial = Path(name)
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = LLAMA_FTYPES[gguf_type]
        params.allow_requantize = True
        params.nthread = os.cpu_count() or 2
        with _quiet_native_stderr():
            failed = llama_cpp.llama_model_quantize(
                str(source).encode(), str(partial).encode(), params
            )
        if failed:
            raise OSError(f"llama.cpp could not convert {source.name} to {gguf_type}")
        partial.chmod(0o644)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """llama.cpp's quantizer prints a line per tensor on file descriptor 2."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
