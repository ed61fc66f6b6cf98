"""OpenTelemetry tracing (app/tracing.py, docs/tracing.md): a sync and a question make the named
spans, with their attributes and parents, read from the SDK's in-memory exporter; nothing is
made, and the SDK is not imported, when no OTEL_* variable asks; and a real `python -m
app.ingest` exports its spans over OTLP/HTTP to a receiver this test runs on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.api.events import Queued
from app.api.service import AnswerRequest, AnswerService
from app.config import Settings
from app.indexing.sync import sync_collection
from app.session.conversation import start_conversation
from app.telemetry import tracing
from chains.core.events import collect
from tests.fakes import MemoryStore, fake_embeddings, scripted
from tests.ollama_server import OllamaTestServer
from tests.serve_process import ServeProcess, ollama_env
from tests.test_session_answer import resources_for

pytestmark = pytest.mark.unit
PROJECT_ROOT = Path(__file__).resolve().parent.parent
OTEL_KEYS = [k for k in os.environ if k.startswith("OTEL_")]
KIND = "openinference.span.kind"
# OpenInference's span kinds: Phoenix shows a span without one as "unknown".
KINDS = {"CHAIN", "RETRIEVER", "EMBEDDING", "LLM", "GUARDRAIL", "PROMPT"}
# Attributes that carry text (the question, documents, prompts, answers): only when asked.
TEXT_KEYS = ("input.value", "output.value", "localrag.rewritten", "localrag.searched")
TEXT_PARTS = (".document.content", "_messages.")


def carries_text(attributes: Any) -> list[str]:
    return [k for k in attributes if k in TEXT_KEYS or any(p in k for p in TEXT_PARTS)]


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Spans of app.telemetry.tracing go to memory (the global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer(tracing.TRACER_NAME))
    return exporter


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def one(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, (name, [s.name for s in spans.get_finished_spans()])
    return found[0]


def parent_of(spans: InMemorySpanExporter, span: ReadableSpan) -> str | None:
    if span.parent is None:
        return None
    by_id = {s.context.span_id: s.name for s in spans.get_finished_spans()}
    return by_id.get(span.parent.span_id, "?")


def test_a_sync_makes_a_span_per_stage_per_file_and_per_batch(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"note{i}.txt").write_text(f"Note {i} about the harbour ferry. " * 20)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    settings = Settings(docs_dir=docs, chunk_size=200, chunk_overlap=20, embedding_batch_size=4)
    embeddings, _ = fake_embeddings(settings)

    report = sync_collection(settings, [docs], embeddings, store=MemoryStore())

    sync = one(spans, "sync")
    assert sync.parent is None
    assert sync.attributes["localrag.files_new"] == 3
    assert sync.attributes["localrag.files_failed"] == 1
    assert sync.attributes["localrag.chunks_added"] == report.chunks_added > 0
    assert sync.attributes["localrag.embedding_model"] == "fake/fake-64"
    assert "localrag.seconds.total" in sync.attributes
    for name in ("read store", "discover", "finish"):
        assert parent_of(spans, one(spans, name)) == "sync"
    discover = one(spans, "discover")
    assert discover.attributes["localrag.files"] == 4

    parsed = {str(s.attributes["localrag.file"]): s for s in named(spans, "parse")}
    assert set(parsed) == {"docs/note0.txt", "docs/note1.txt", "docs/note2.txt", "docs/broken.pdf"}
    for name, span in parsed.items():
        assert parent_of(spans, span) == "sync"
        assert sync.start_time <= span.start_time  # type: ignore[operator]
        assert span.start_time <= span.end_time <= sync.end_time  # type: ignore[operator]
        assert span.status.is_ok is (not name.endswith(".pdf"))
    assert parsed["docs/note0.txt"].attributes["localrag.characters"] > 0
    assert "localrag.error" in parsed["docs/broken.pdf"].attributes

    splits = named(spans, "split")
    assert len(splits) == 3
    assert sum(int(s.attributes["localrag.chunks"]) for s in splits) == report.chunks_added

    batches = named(spans, "embed")
    assert len(batches) == -(-report.chunks_added // 4)  # one span per batch
    assert sum(int(s.attributes["localrag.chunks"]) for s in batches) == report.chunks_added
    for span in spans.get_finished_spans():
        assert span.attributes[KIND] in KINDS, span.name
    assert sync.attributes[KIND] == "CHAIN"
    for batch in batches:  # embedded in the background thread, a child of the sync all the same
        assert parent_of(spans, batch) == "sync"
        assert batch.attributes[KIND] == "EMBEDDING"
        assert batch.attributes["embedding.model_name"] == "fake-64"
        assert batch.attributes["gen_ai.operation.name"] == "embeddings"
        assert batch.attributes["gen_ai.request.model"] == "fake-64"
        assert batch.attributes["gen_ai.provider.name"] == "fake"
    writes = named(spans, "write")
    assert sum(int(s.attributes["localrag.chunks"]) for s in writes) == report.chunks_added
    index_adds = [
        s for s in named(spans, "keyword index") if s.attributes["localrag.step"] == "add"
    ]
    assert index_adds
    assert all(parent_of(spans, s) == "write" for s in index_adds)


def ask_twice(tmp_path: Path, mode: str) -> tuple[Any, Any]:
    model = scripted(
        "The keeper feeds them [1].", "When does the keeper feed the gulls?", "At dawn [1]."
    )
    resources = resources_for(tmp_path, model)
    resources.settings = resources.settings.model_copy(update={"retrieval_mode": mode})
    conversation = start_conversation(resources, "rag")
    first = collect(conversation.answer("Who feeds the gulls?"))
    conversation.remember("Who feeds the gulls?", first.text)
    return first, collect(conversation.answer("When does he do it?"))


def test_a_question_makes_its_steps_spans_under_one_root(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    _, answer = ask_twice(tmp_path, "hybrid")
    assert answer.text == "At dawn [1]."

    roots = named(spans, "question")
    assert len(roots) == 2
    assert all(r.parent is None for r in roots)
    root = roots[1]
    assert root.attributes["localrag.chain"] == "rag"
    assert root.attributes["localrag.entry_point"] == "chat"
    assert root.attributes["localrag.not_found"] is False
    assert list(root.attributes["localrag.chunk_ids"]) == [str(d.id) for d in answer.documents]
    assert "input.value" not in root.attributes  # no text unless asked for

    def under_root(name: str) -> ReadableSpan:
        found = [s for s in named(spans, name) if s.context.trace_id == root.context.trace_id]
        assert len(found) == 1, name
        return found[0]

    rewrite = under_root("rewrite")
    assert parent_of(spans, rewrite) == "question"
    assert rewrite.attributes["localrag.history_messages"] == 2
    assert rewrite.attributes["localrag.used_rewrite"] is True

    retrieve = under_root("retrieve")
    assert parent_of(spans, retrieve) == "question"
    assert retrieve.attributes["localrag.mode"] == "hybrid"
    assert retrieve.attributes["openinference.span.kind"] == "RETRIEVER"
    assert list(retrieve.attributes["localrag.chunk_ids"]) == [str(d.id) for d in answer.documents]
    assert len(retrieve.attributes["localrag.scores"]) == len(answer.documents)
    assert retrieve.attributes["retrieval.documents.0.document.id"] == str(answer.documents[0].id)
    for leg in ("retrieve.vector", "retrieve.keywords", "fuse"):
        assert parent_of(spans, under_root(leg)) == "retrieve"
    assert under_root("retrieve.vector").attributes["localrag.candidates"] >= 1
    assert under_root("fuse").attributes["localrag.pool"] >= 1

    fit = under_root("fit budget")
    assert parent_of(spans, fit) == "question"
    assert 0 < fit.attributes["localrag.prompt_tokens"] <= fit.attributes["localrag.budget_tokens"]

    prompt = under_root("prompt")
    assert parent_of(spans, prompt) == "question"
    assert prompt.attributes["localrag.messages"] == 4  # system, the exchange, the question
    assert prompt.attributes[KIND] == "PROMPT"
    generate = under_root("generate")
    assert parent_of(spans, generate) == "question"
    assert generate.attributes["gen_ai.operation.name"] == "chat"
    assert generate.attributes["openinference.span.kind"] == "LLM"
    assert generate.attributes["localrag.chunks_streamed"] >= 1
    assert generate.attributes["llm.provider"] == generate.attributes["gen_ai.provider.name"]
    check = under_root("check")  # the answer checked against its sources: a guardrail
    assert parent_of(spans, check) == "question"
    assert check.attributes[KIND] == "GUARDRAIL"
    assert check.attributes["localrag.unsupported"] == 0
    assert generate.end_time <= check.start_time  # type: ignore[operator]
    for span in spans.get_finished_spans():
        assert span.attributes[KIND] in KINDS, span.name
        assert not carries_text(span.attributes), span.name
    assert root.attributes[KIND] == "CHAIN"
    assert rewrite.attributes[KIND] == "LLM"
    first = under_root("first token")
    assert parent_of(spans, first) == "generate"
    assert generate.start_time <= first.start_time <= first.end_time <= generate.end_time  # type: ignore[operator]
    # In order: what each step needed had come before it.
    assert rewrite.end_time <= retrieve.start_time <= retrieve.end_time <= fit.start_time  # type: ignore[operator]
    assert fit.end_time <= prompt.start_time <= prompt.end_time <= generate.start_time  # type: ignore[operator]


def test_each_mode_is_traced_by_its_own_steps(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    ask_twice(tmp_path, "mmr")
    names = {s.name for s in spans.get_finished_spans()}
    assert {"retrieve", "retrieve.vector", "mmr"} <= names
    assert not {"fuse", "retrieve.keywords"} & names


def test_text_is_recorded_only_when_asked(
    tmp_path: Path, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    _, answer = ask_twice(tmp_path, "similarity")
    root = named(spans, "question")[1]
    assert root.attributes["input.value"] == "When does he do it?"
    assert root.attributes["output.value"] == "At dawn [1]."  # Phoenix lists traces by these
    generate = named(spans, "generate")[1]
    assert generate.attributes["output.value"] == "At dawn [1]."
    assert generate.attributes["llm.output_messages.0.message.role"] == "assistant"
    assert generate.attributes["llm.output_messages.0.message.content"] == "At dawn [1]."
    # The prompt as the model got it: system, the earlier exchange, the question with sources.
    roles = [generate.attributes[f"llm.input_messages.{i}.message.role"] for i in range(4)]
    assert roles == ["system", "user", "assistant", "user"]
    asked = str(generate.attributes["llm.input_messages.3.message.content"])
    assert "When does he do it?" in asked
    assert answer.documents[0].page_content in asked
    retrieve = named(spans, "retrieve")[1]
    content = retrieve.attributes["retrieval.documents.0.document.content"]
    assert content == answer.documents[0].page_content


def serve(resources: Any, *questions: str) -> list[Any]:
    """Answer each question as the HTTP server does (its service on an event loop whose
    executor is the server's), one after the other."""
    service = AnswerService(resources, resources.settings, "rag")

    async def run() -> list[Any]:
        service.use_loop(asyncio.get_running_loop())
        answers = []
        for question in questions:
            prepared = service.prepare(AnswerRequest(question))
            try:
                answers.append(await prepared.collect())
            finally:
                prepared.release()
        return answers

    return asyncio.run(run())


def test_the_servers_steps_in_its_threads_join_the_questions_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """The server runs sync steps (the answer check, the extract that replaces an answer) in
    its event loop's executor, whose threads do not inherit the question's context unless it
    is handed to them: without it each would be a trace of its own."""
    model = scripted("The keeper feeds them at 09:45 [1].")  # a time the source does not hold
    resources = resources_for(tmp_path, model)
    spans.clear()
    (completed,) = serve(resources, "When are the gulls fed?")
    assert completed.replaced  # the check withdrew the answer and quoted the source instead

    root = one(spans, "question")
    assert root.parent is None
    assert root.attributes["localrag.entry_point"] == "serve"
    assert root.attributes["localrag.replaced"]
    for span in spans.get_finished_spans():
        assert span.context.trace_id == root.context.trace_id, span.name
    for name in ("retrieve", "fit budget", "prompt", "generate", "check"):
        assert parent_of(spans, one(spans, name)) == "question", name
    check = one(spans, "check")
    assert check.attributes["localrag.unsupported"] == 1
    assert list(check.attributes["localrag.unsupported_kinds"]) == ["time"]
    assert parent_of(spans, one(spans, "extract")) == "check"
    assert not named(spans, "wait for turn")


def test_an_extracted_answer_is_a_step_of_its_question(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    resources = resources_for(tmp_path, scripted())  # the model is never called
    resources.settings = resources.settings.model_copy(update={"answer_mode": "extract"})
    spans.clear()
    (completed,) = serve(resources, "Who feeds the gulls?")
    assert "keeper" in completed.answer
    extract = one(spans, "extract")
    assert parent_of(spans, extract) == "question"
    assert extract.attributes[KIND] == "CHAIN"
    assert extract.attributes["localrag.dont_know"] is False
    assert not {"generate", "check"} & {s.name for s in spans.get_finished_spans()}


def test_a_question_that_waits_for_its_turn_shows_the_wait(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    """One turn on the embedded model: a second request waits, and its trace says so."""
    resources = resources_for(tmp_path, scripted("At dawn [1].", "At dawn [1]."))
    service = AnswerService(resources, resources.settings, "rag")
    spans.clear()

    async def run() -> None:
        service.use_loop(asyncio.get_running_loop())
        first = service.prepare(AnswerRequest("Who feeds the gulls?"))
        second = service.prepare(AnswerRequest("When?"))
        try:
            waiting = second.events()
            assert isinstance(await anext(waiting), Queued)  # the first one holds the turn
            await first.collect()
            assert [e async for e in waiting]
        finally:
            first.release()
            second.release()

    asyncio.run(run())
    questions = named(spans, "question")
    assert len(questions) == 2
    wait = one(spans, "wait for turn")
    assert wait.parent is not None
    second = next(q for q in questions if q.context.span_id == wait.parent.span_id)
    first = next(q for q in questions if q is not second)
    assert wait.attributes["localrag.ahead"] == 0  # no one waiting ahead: the first is answering
    # It lasted until the first answer was done, and the second's steps came after it.
    assert wait.end_time >= first.end_time  # type: ignore[operator]
    steps = [s for s in named(spans, "retrieve") if s.context.trace_id == second.context.trace_id]
    assert steps[0].start_time >= wait.end_time  # type: ignore[operator]


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
    ],
)
def test_traces_are_on_only_when_otel_variables_ask(environ: dict[str, str], enabled: bool) -> None:
    assert tracing.enabled_by_env(environ) is enabled


OFF_PROBE = """
import sys
from pathlib import Path


class NoSDK:  # the SDK cannot be imported at all (LangSmith falls back without it)
    def find_spec(self, name, path, target=None):
        if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
            raise ImportError("no SDK in this process")


sys.meta_path.insert(0, NoSDK())
from app.config import Settings
from app.indexing.sync import sync_collection
from app.telemetry.tracing import setup_tracing
from opentelemetry import trace
from tests.fakes import MemoryStore, fake_embeddings

if __name__ == "__main__":
    assert setup_tracing("ingest") is False
    docs = Path(sys.argv[1])
    settings = Settings(docs_dir=docs)
    embeddings, _ = fake_embeddings(settings)
    report = sync_collection(settings, [docs], embeddings, store=MemoryStore())
    assert report.chunks_added > 0
    with trace.get_tracer("probe").start_as_current_span("x") as span:
        assert not span.is_recording()
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    sdk = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))
    print("SDK", sdk)
"""


def test_off_nothing_is_recorded_and_the_sdk_is_not_needed(tmp_path: Path) -> None:
    """In a process of its own where the SDK cannot be imported: a sync runs on the API's
    no-op tracer, and no tracer provider is installed. (Where the SDK is installed, LangSmith,
    which langchain-core imports, imports part of it whatever we do.)"""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lighthouse keeper feeds the gulls at dawn.")
    probe = tmp_path / "probe.py"
    probe.write_text(OFF_PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, str(probe), str(docs)],
        cwd=PROJECT_ROOT,
        env=env | {"PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "SDK []" in done.stdout


@dataclass(frozen=True)
class Exported:
    name: str
    attributes: dict[str, Any]
    trace_id: bytes
    span_id: bytes
    parent_id: bytes  # empty for a root


class Receiver:
    """A minimal OTLP/HTTP collector: keeps the spans of every POST to /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any], bytes]] = []
        self.records: list[Exported] = []
        self.resources: list[dict[str, Any]] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    received.resources.append(
                        {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    )
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            attributes = {a.key: _value(a.value) for a in span.attributes}
                            received.spans.append((span.name, attributes, span.parent_span_id))
                            received.records.append(
                                Exported(
                                    span.name,
                                    attributes,
                                    span.trace_id,
                                    span.span_id,
                                    span.parent_span_id,
                                )
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.mark.integration
def test_a_real_ingest_exports_its_spans_over_otlp_http(
    tmp_path: Path,
    receiver: Receiver,
    ollama_server: Any,
    run_module: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lighthouse keeper feeds the gulls at dawn. " * 10)
    (docs / "b.md").write_text("# Ferry\n\nThe harbour ferry leaves at nine. " * 10)
    done = run_module(
        "app.ingest",
        str(docs),
        EMBEDDING_PROVIDER="ollama",
        OLLAMA_BASE_URL=ollama_server.base_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="localrag-test",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    names = [name for name, _, _ in receiver.spans]
    for expected in ("sync", "read store", "discover", "parse", "split", "embed", "write"):
        assert expected in names, names
    assert names.count("parse") == 2
    sync = next(attrs for name, attrs, _ in receiver.spans if name == "sync")
    assert sync["localrag.files_new"] == 2
    assert sync["localrag.embedding_provider"] == "ollama"
    assert {r.get("service.name") for r in receiver.resources} == {"localrag-test"}
    embed = next(attrs for name, attrs, _ in receiver.spans if name == "embed")
    assert embed["gen_ai.provider.name"] == "ollama"


@pytest.mark.integration
def test_a_real_server_exports_each_question_as_one_trace(
    tmp_path: Path, receiver: Receiver
) -> None:
    """`python -m app.serve` exporting to an OTLP/HTTP receiver: a question through
    POST /api/chat is the root of one trace holding all its steps (FastAPI's own request spans
    are off), the page's health polls make no span, and no text leaves without capture."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lighthouse keeper feeds the gulls at dawn. " * 10)
    with OllamaTestServer(reply="The keeper feeds them at dawn [1].") as ollama:
        env = ollama_env(
            tmp_path / "chroma",
            ollama.base_url,
            docs,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        )
        env.pop("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None)
        with ServeProcess(env) as server:
            httpx.get(server.url + "/api/health", timeout=30).raise_for_status()
            reply = httpx.post(
                server.url + "/api/chat", json={"question": "Who feeds the gulls?"}, timeout=120
            )
            assert "event: done" in reply.text, reply.text
            httpx.get(server.url + "/api/health", timeout=30).raise_for_status()
            assert server.stop() == 0  # spans are flushed at exit

    records = receiver.records
    assert not [r.name for r in records if "http.request.method" in r.attributes]
    assert not [r.name for r in records if r.name.startswith(("GET", "POST", "fastapi."))]
    for record in records:
        assert record.attributes[KIND] in KINDS, record.name
        assert not carries_text(record.attributes), record.name
    (question,) = [r for r in records if r.name == "question"]
    assert question.parent_id == b""
    assert question.attributes["localrag.entry_point"] == "serve"
    steps = {r.name: r for r in records if r.trace_id == question.trace_id and r is not question}
    assert set(steps) == {
        "retrieve", "retrieve.vector", "fit budget", "prompt", "generate", "first token", "check"
    }  # fmt: skip
    for name in ("retrieve", "fit budget", "prompt", "generate", "check"):
        assert steps[name].parent_id == question.span_id, name
    assert steps["first token"].parent_id == steps["generate"].span_id
    generate = steps["generate"].attributes
    assert generate["llm.model_name"] == "llama3.2"
    assert generate["llm.token_count.prompt"] > 0
    assert generate["llm.token_count.completion"] > 0
    retrieve = steps["retrieve"].attributes
    assert retrieve[KIND] == "RETRIEVER"
    assert retrieve["retrieval.documents.0.document.id"] == retrieve["localrag.chunk_ids"][0]
    (sync,) = [r for r in records if r.name == "sync"]  # the server's first ingest
    assert sync.parent_id == b""
    assert sync.trace_id != question.trace_id
