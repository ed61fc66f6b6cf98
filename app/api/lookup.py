"""Reading the library without the chat model: search, a passage by chunk id with the text
around it, the sources and their files, a file's text. What the MCP server's tools and
resources call (and the passages API); each first follows the library as it is now, as every
answer does, and says what is wrong in one line with the field to fix (`RequestRejected`) or
the failure a person can act on (`AnswerFailed`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from langchain_core.documents import Document

from app.api.errors import RequestRejected
from app.api.service import AnswerService
from app.api.validation import unencodable
from app.indexing.sync import chunk_policy, file_fingerprint
from app.retrieval.filters import SourceFilter
from app.retrieval.page_images import (
    DEFAULT_WIDTH,
    MAX_WIDTH,
    MIN_WIDTH,
    PAGED_PICTURES,
    PageImage,
    PageUnavailable,
    RenderedPages,
    library_file,
    render_page,
)
from app.retrieval.passages import MAX_CONTEXT, Passage, file_chunks, file_text, find_passage, pages
from app.retrieval.retriever import Mode
from app.session.conversation import Conversation
from app.store.library import describe_library

MAX_K = 50  # passages one search returns at most
MAX_FILTERS = 10
MAX_FILES_LISTED = 500  # per source, in list_sources
_RENDERED = RenderedPages()  # cited pages drawn lately, for every request of this process


@dataclass(frozen=True)
class Found:
    """One search hit: the chunk, where it is, and its cosine relevance to the query."""

    chunk_id: str
    source: str
    page: int | None
    score: float | None
    text: str
    below_threshold: bool

    @classmethod
    def of(cls, doc: Document) -> Found:
        score = doc.metadata.get("score")
        page = doc.metadata.get("page")
        return cls(
            chunk_id=str(doc.id),
            source=str(doc.metadata.get("source", "unknown")),
            page=page if isinstance(page, int) else None,
            score=score if isinstance(score, float) else None,
            text=doc.page_content,
            below_threshold=bool(doc.metadata.get("below_threshold")),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "source": self.source,
            "page": self.page,
            "score": self.score,
            "text": self.text,
        }


@dataclass(frozen=True)
class SearchResult:
    passages: list[Found]
    not_found: bool  # nothing reached the relevance threshold: these are only the nearest

    def as_json(self) -> dict[str, Any]:
        return {
            "not_found": self.not_found,
            "passages": [p.as_json() for p in self.passages],
        }


class LibraryLookup:
    """The library's read side over the service's shared resources."""

    def __init__(self, service: AnswerService) -> None:
        self.service = service

    def _follow(self) -> None:
        """Every write since the last look, by any process; after a store failure, the store
        opened again first."""
        service = self.service
        failed, service.store_failed = service.store_failed, False
        try:
            service.resources.follow_library(after_failure=failed)
        except Exception as exc:
            raise service.explain(exc) from exc

    # --- search

    def search(
        self, query: str, k: int = 5, mode: Mode | None = None, where: list[str] | None = None
    ) -> SearchResult:
        self._check_text("query", query)
        if not 1 <= k <= MAX_K:
            raise RequestRejected(422, f"k must be between 1 and {MAX_K}.", "k")
        filters = self._filters(where or [])
        self._follow()
        service = self.service
        try:
            retriever = Conversation(service.resources, service.default_spec, filters).retriever()
            search: dict[str, Any] = {"k": k, "fetch_k": max(retriever.fetch_k, 5 * k)}
            if mode is not None:
                search["mode"] = mode
            documents = retriever.with_search(**search).invoke(query)
        except Exception as exc:
            raise service.explain(exc) from exc
        found = [Found.of(doc) for doc in documents]
        return SearchResult(found, not found or all(f.below_threshold for f in found))

    def _filters(self, where: list[str]) -> list[SourceFilter]:
        if len(where) > MAX_FILTERS:
            raise RequestRejected(422, f"At most {MAX_FILTERS} filters.", "where")
        filters = []
        for index, text in enumerate(where):
            self._check_text(f"where[{index}]", text, empty_ok=False)
            try:
                filters.append(SourceFilter.parse(text))
            except ValueError as exc:
                raise RequestRejected(422, str(exc), f"where[{index}]") from None
        return filters

    def _check_text(self, name: str, text: str, *, empty_ok: bool = False) -> None:
        problem = unencodable(text)
        if problem:
            raise RequestRejected(422, f"{name} {problem}.", name)
        if not empty_ok and not text.strip():
            raise RequestRejected(422, f"The {name} is empty.", name)
        limit = self.service.settings.serve_max_question_chars
        if len(text) > limit:
            raise RequestRejected(
                413,
                f"The {name} has {len(text):,} characters; this server takes at most "
                f"{limit:,} (SERVE_MAX_QUESTION_CHARS).",
                name,
            )

    # --- passages and files

    def passage(self, chunk_id: str, context: int = 1, query: str | None = None) -> Passage:
        """The chunk with `context` chunks on each side; with a `query`, its `score` for it,
        made as a search for that query makes it (what the answer's source showed)."""
        if not 0 <= context <= MAX_CONTEXT:
            raise RequestRejected(
                422, f"context must be between 0 and {MAX_CONTEXT} chunks.", "context"
            )
        chunk_id = self._chunk_id(chunk_id)
        if query is not None:
            self._check_text("query", query)
        self._follow()
        service = self.service
        try:
            found = find_passage(service.resources.collection, chunk_id, context)
            if found is not None and query is not None:
                retriever = Conversation(service.resources, service.default_spec).retriever()
                score = retriever.relevance(query, [chunk_id]).get(chunk_id)
                found = replace(found, score=score)
        except Exception as exc:
            raise service.explain(exc) from exc
        if found is None:
            raise self._gone(chunk_id)
        return found

    def page_image(self, chunk_id: str, width: int = DEFAULT_WIDTH) -> PageImage:
        """The page a chunk was cited from, drawn from its file on disk (a PDF page or an
        image), with the passage marked when the page's text layer holds it. Refused, never
        another page: a file that is gone or changed since it was indexed (its fingerprint is
        not the chunk's), a file that is not a PDF or image, a page it does not have."""
        if not MIN_WIDTH <= width <= MAX_WIDTH:
            raise RequestRejected(
                422, f"width must be between {MIN_WIDTH} and {MAX_WIDTH} pixels.", "width"
            )
        chunk_id = self._chunk_id(chunk_id)
        self._follow()
        service = self.service
        resources = service.resources
        try:
            found = resources.collection.get([chunk_id])
        except Exception as exc:
            raise service.explain(exc) from exc
        if not found:
            raise self._gone(chunk_id)
        chunk = found[0]
        name = str(chunk.metadata.get("source", ""))
        page = chunk.metadata.get("page")
        if PurePosixPath(name).suffix.lower() not in PAGED_PICTURES or not isinstance(page, int):
            raise RequestRejected(
                404,
                f"{name} is not a PDF or an image: it has no page to show. Its text is at "
                f"/api/passages/{chunk_id}.",
                "chunk_id",
            )
        source = resources.library.source(name.partition("/")[0])
        path = library_file(source, name) if source is not None else None
        if path is None:
            raise RequestRejected(
                404,
                f"{name} is not on disk here now (moved, deleted, or its source is on another "
                "machine): its page cannot be shown.",
                "chunk_id",
            )
        try:
            fingerprint = file_fingerprint(
                path, chunk_policy(service.settings, resources.embeddings)
            )
        except OSError as exc:
            raise RequestRejected(
                404, f"{name} cannot be read now ({exc.strerror or exc}).", "chunk_id"
            ) from None
        if fingerprint != chunk.metadata.get("file_hash"):
            raise RequestRejected(
                409,
                f"{name} changed on disk since it was indexed: page {page} may no longer be the "
                "page cited, so it is not shown. Sync the library (`python -m app.ingest`) and "
                "ask again.",
                "chunk_id",
            )
        key = (fingerprint, page, width, chunk_id)
        image = _RENDERED.get(key)
        if image is None:
            passage = "" if chunk.metadata.get("ocr") else chunk.text  # a scan has no text layer
            try:
                image = render_page(path, page, width, passage)
            except PageUnavailable as exc:
                raise RequestRejected(
                    404, f"Page {page} of {name} cannot be shown: {exc}.", "chunk_id"
                ) from None
            _RENDERED.put(key, image)
        return image

    def _chunk_id(self, chunk_id: str) -> str:
        chunk_id = chunk_id.strip()
        if not chunk_id or len(chunk_id) > 200 or unencodable(chunk_id):
            raise RequestRejected(422, "chunk_id is not a chunk id (40 hex digits).", "chunk_id")
        return chunk_id

    @staticmethod
    def _gone(chunk_id: str) -> RequestRejected:
        return RequestRejected(
            404,
            f"No passage has the chunk id {chunk_id} now: its file changed or was removed "
            "since it was cited. Search again for the current text.",
            "chunk_id",
        )

    def files(self) -> list[str]:
        """Every stored file, as citations name it (`label/path inside the source`)."""
        self._follow()
        return sorted(self.service.resources.keyword_index.sources())

    def file(self, source: str, page: int | None = None) -> tuple[str, list[int]]:
        """A stored file's text (one page's, when `page` is given) and its pages."""
        self._follow()
        try:
            chunks = file_chunks(self.service.resources.collection, source)
        except Exception as exc:
            raise self.service.explain(exc) from exc
        if not chunks:
            raise RequestRejected(
                404,
                f"The library has no file {source}: list_sources names the files it holds.",
                "uri",
            )
        numbers = pages(chunks)
        if page is not None and page not in numbers:
            held = f"pages {numbers[0]} to {numbers[-1]}" if numbers else "no pages"
            raise RequestRejected(404, f"{source} has no page {page}; it has {held}.", "page")
        return file_text(chunks, page), numbers

    def sources(self) -> dict[str, Any]:
        """The library: each source with its files, chunks and whether it is on disk now."""
        self._follow()
        resources = self.service.resources
        described = describe_library(resources.library)
        by_label: dict[str, list[str]] = defaultdict(list)
        for name in sorted(resources.keyword_index.sources()):
            by_label[name.partition("/")[0]].append(name)
        for source in described["sources"]:
            names = by_label.get(source["label"], [])
            source["stored_files"] = names[:MAX_FILES_LISTED]
            if len(names) > MAX_FILES_LISTED:
                source["stored_files_left_out"] = len(names) - MAX_FILES_LISTED
        return described
