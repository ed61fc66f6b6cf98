"""OpenTelemetry spans for ingest and for each question (docs/tracing.md lists them).

Off unless the standard OTEL_* variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`..._TRACES_ENDPOINT`), or `OTEL_TRACES_EXPORTER` other than `none`; `OTEL_SDK_DISABLED=true`
turns it off whatever else is set. Off, the SDK is never imported: every span below goes to the
OpenTelemetry API's no-op tracer (a few hundred nanoseconds a span, nothing allocated for
attributes a caller computes only `if s.is_recording()`). On, `setup_tracing` (called by each
entry point at start-up) installs the SDK's tracer provider, exporting over OTLP/HTTP (protobuf)
to any collector; spans are batched in a background thread and flushed at exit.

Spans are made current only around work that does not yield: a generator's step may run in
another thread's copy of the context (LangChain's streaming does that), so a stream is traced
with `start` + `in_span`, which make the span current for each step only.

Attribute names: ours under `localrag.`; a model call also carries the OpenTelemetry GenAI
names (`gen_ai.*`, read by Langfuse, Grafana, Datadog) and OpenInference's (`openinference.span.
kind`, `llm.*`, `retrieval.documents.*`, read by Phoenix). Text (questions, prompts, answers) is
recorded only with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`: the documents are
private, the collector may not be.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

__all__ = [
    "Span",
    "Status",
    "StatusCode",
    "ain_span",
    "capture_content",
    "enabled_by_env",
    "in_span",
    "llm_attributes",
    "message_attributes",
    "record",
    "retrieval_attributes",
    "setup_tracing",
    "span",
    "span_kind",
    "start",
]

TRACER_NAME = "localrag"
SPAN_KIND = "openinference.span.kind"
SERVICE_NAME = "localrag"
log = logging.getLogger(__name__)
T = TypeVar("T")
_installed = False


def enabled_by_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTEL_* variables ask for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def capture_content() -> bool:
    """Whether spans may carry text (questions, prompts, answers): only when asked."""
    value = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return value.strip().lower() == "true"


def setup_tracing(entry_point: str) -> bool:
    """Install the SDK's tracer provider when the environment asks for traces; True if it did.
    A missing SDK (the `tracing` extra not installed) or an unknown exporter is a warning, not
    a failure: OTEL_* variables are often set machine-wide for other programs."""
    global _installed
    if _installed or not enabled_by_env():
        return _installed
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_* variables ask for traces but the OpenTelemetry SDK is not installed: "
            "pip install -e '.[tracing]'. Going on without traces."
        )
        return False
    exporters = [e for e in (_exporter(name) for name in _exporter_names()) if e is not None]
    if not exporters:
        return False
    attributes = {"localrag.entry_point": entry_point}
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))  # flushes at exit
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _installed = True
    return True


def _exporter_names() -> list[str]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    return [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]


def _exporter(name: str) -> Any:
    """The named span exporter (`otlp` over HTTP, or gRPC when OTEL_EXPORTER_OTLP_PROTOCOL says
    so; `console`), reading its endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout may be a protocol (MCP's stdio)
    if name != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not one localrag knows (otlp, console).", name)
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
    except ImportError:
        log.warning(
            "The OTLP exporter for %s is not installed: pip install -e '.[tracing]'. "
            "Going on without traces.",
            protocol,
        )
        return None
    return OTLPSpanExporter()


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


_API_TRACER = _tracer
_NO_SPAN: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)


def _off() -> bool:
    """No tracer provider installed (by us or anyone): every span would be the API's no-op
    one, so skip even building it (~0.3 us a span instead of ~12)."""
    return _tracer is _API_TRACER and isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """What OpenTelemetry takes: None dropped, anything not a plain value made a string."""
    clean: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
            if not all(isinstance(v, (str, bool, int, float)) for v in items):
                items = [str(v) for v in items]
            clean[key] = items
        elif isinstance(value, (str, bool, int, float)):
            clean[key] = value
        else:
            clean[key] = str(value)
    return clean


def span(
    name: str, *, parent: otel_context.Context | None = None, **attributes: Any
) -> AbstractContextManager[Span]:
    """A span around a block that does not yield, current inside it (so spans started in it
    are its children). An exception marks it failed and is recorded on it. Attribute names
    given as keywords: `localrag_files=3` is recorded as `localrag.files`."""
    if _off():
        return _NO_SPAN
    return _tracer().start_as_current_span(name, context=parent, attributes=_kinded(attributes))


def start(
    name: str,
    *,
    parent: Span | otel_context.Context | None = None,
    start_time: int | None = None,
    **attributes: Any,
) -> Span:
    """A span that is not made current (end it yourself): for streams and for work done
    elsewhere (a parse in a worker process, timed there)."""
    if _off():
        return trace.INVALID_SPAN
    context = trace.set_span_in_context(parent) if isinstance(parent, Span) else parent
    return _tracer().start_span(
        name, context=context, attributes=_kinded(attributes), start_time=start_time
    )


def record(target: Span, **attributes: Any) -> None:
    """Add attributes (keyword names as in `span`) to a span, when it records."""
    if target.is_recording():
        target.set_attributes(_clean(_dotted(attributes)))


def record_failure(target: Span, exc: BaseException) -> None:
    if target.is_recording():
        target.record_exception(exc)
        target.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def in_span(target: Span, items: Iterator[T]) -> Iterator[T]:
    """Iterate `items` with `target` current while each item is made (not while the consumer
    holds it); the span is not ended here."""
    if not target.is_recording():
        yield from items
        return
    context = trace.set_span_in_context(target)
    while True:
        token = otel_context.attach(context)
        try:
            item = next(items)
        except StopIteration:
            return
        finally:
            otel_context.detach(token)
        yield item


async def ain_span(target: Span, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`in_span` for an async stream."""
    if not target.is_recording():
        async for item in items:
            yield item
        return
    context = trace.set_span_in_context(target)
    while True:
        token = otel_context.attach(context)
        try:
            item = await anext(items)
        except StopAsyncIteration:
            return
        finally:
            otel_context.detach(token)
        yield item


def current_context() -> otel_context.Context:
    """The context to hand to work done in another thread (an embedding batch)."""
    return otel_context.get_current()


# --- Attribute sets ---------------------------------------------------------------------------


def _kinded(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A new span's attributes, with an OpenInference span kind: Phoenix shows a span without
    one as "unknown" and leaves it out of its views of a trace's steps."""
    clean = _clean(_dotted(attributes))
    clean.setdefault(SPAN_KIND, "CHAIN")
    return clean


def _dotted(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """`localrag_files` -> `localrag.files`; names with dots (given as **{...}) stay."""
    return {
        (key.replace("_", ".", 1) if key.startswith("localrag_") else key): value
        for key, value in attributes.items()
    }


def span_kind(kind: str) -> dict[str, Any]:
    """OpenInference's span kind (CHAIN, the default; RETRIEVER, LLM, EMBEDDING, PROMPT,
    GUARDRAIL): how Phoenix draws it."""
    return {SPAN_KIND: kind}


# OpenInference's names for who said a message (LangChain's message types as keys).
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def message_attributes(direction: str, messages: list[Any]) -> dict[str, Any]:
    """OpenInference's `llm.input_messages.N.message.role/content` (direction `input`) or
    `llm.output_messages...` (`output`) of LangChain messages: text, so only when capture is on
    (the caller checks `capture_content()`)."""
    attributes: dict[str, Any] = {}
    for i, message in enumerate(messages):
        prefix = f"llm.{direction}_messages.{i}.message."
        attributes[prefix + "role"] = _ROLES.get(message.type, message.type)
        attributes[prefix + "content"] = message.text
    return attributes


def llm_attributes(model: str | None, provider: str | None, operation: str) -> dict[str, Any]:
    """A model call in both vocabularies: OpenTelemetry GenAI and OpenInference."""
    return {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "gen_ai.provider.name": provider,
        SPAN_KIND: "EMBEDDING" if operation == "embeddings" else "LLM",
        "llm.model_name" if operation != "embeddings" else "embedding.model_name": model,
        "llm.provider": provider,
    }


def usage_attributes(input_tokens: int | None, output_tokens: int | None) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "llm.token_count.prompt": input_tokens,
        "llm.token_count.completion": output_tokens,
        "llm.token_count.total": (
            input_tokens + output_tokens
            if input_tokens is not None and output_tokens is not None
            else None
        ),
    }


def retrieval_attributes(documents: list[Any]) -> dict[str, Any]:
    """Chunk ids, sources and scores of retrieved Documents; their text only when capture is
    on (`retrieval.documents.N.document.content`, which Phoenix shows under the retriever)."""
    attributes: dict[str, Any] = {
        "localrag.chunks": len(documents),
        "localrag.chunk_ids": [str(d.id) for d in documents],
        "localrag.sources": [str(d.metadata.get("source", "")) for d in documents],
        "localrag.scores": [float(d.metadata.get("score", 0.0)) for d in documents],
    }
    text = capture_content()
    for i, doc in enumerate(documents):
        prefix = f"retrieval.documents.{i}.document."
        attributes[prefix + "id"] = str(doc.id)
        attributes[prefix + "score"] = float(doc.metadata.get("score", 0.0))
        if text:
            attributes[prefix + "content"] = doc.page_content
    return attributes
