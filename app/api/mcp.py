"""The library as a Model Context Protocol server (the official `mcp` SDK's `MCPServer`): tools
that search it, answer from it, list it and resolve a citation to its passage, and resources
for its files. `python -m app.mcp` runs it over stdio; `python -m app.serve` mounts it at
`/mcp` over Streamable HTTP, behind the API's own guard (host, token, limits).

Errors a caller can act on (a bad argument, an unknown chunk id, a model server down) come back
as tool errors (`isError`) whose text is the one line the terminal prints, and whose structured
content names the argument to fix: the model reads them and can correct its call. Arguments are
checked against the published input schema first (types, ranges, choices)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError
from starlette.applications import Starlette

from app.api.errors import AnswerFailed, RequestRejected
from app.api.lookup import MAX_FILTERS, MAX_K, LibraryLookup, SearchResult
from app.api.service import AnswerRequest, AnswerService
from app.retrieval.passages import MAX_CONTEXT, Passage

log = logging.getLogger("localrag.mcp")

FILE_URI = "localrag://library/{+path}{?page}"

INSTRUCTIONS = """\
This server reads the user's own document library (their files, chunked and indexed locally).
Use `search` to find passages and answer from them yourself, citing each passage's source and
page; use `ask` only when the user wants this server's own model to answer. Every passage has
a chunk_id: `get_passage` shows it with the text around it, and the resource
localrag://library/<source> holds a whole file's text (`?page=N` for one page)."""

SEARCH = """\
Search the user's document library for passages relevant to a query, best first. Returns each \
passage's text with its source file, page (for paged formats such as PDF), relevance score \
(cosine, 0-1) and chunk_id. Use it to answer questions about the user's documents, notes or \
files with your own words, citing source and page. `not_found: true` means no passage reached \
the relevance threshold: the passages are only the nearest, and the library probably does not \
hold the answer; say so rather than guess."""

ASK = """\
Ask this server's own chat model to answer a question from the user's document library. \
Returns the answer with its numbered sources ([1], [2]...; file, page, score, chunk_ids). The \
answer is checked against its sources: an answer stating what they do not hold is replaced by \
the sources' own sentences, and the reason is given. Slower than `search` (a model writes the \
answer, one at a time); prefer `search` when you can answer from passages yourself."""

LIST_SOURCES = """\
List the user's document library: each source (a folder or file they added) with its path, \
files, chunks, when it was last synced and whether it is on disk now ('ok' or 'missing'), \
and the stored file names that `search` results and the `where` filter use. Use it to learn \
what the library holds before searching, or to name files for `where`."""

GET_PASSAGE = """\
Show the passage a chunk_id names (from `search` or from `ask`'s sources) with the text just \
before and after it in the same file, its source and page. Use it to check a citation or to \
read more around a passage; give the query to get the passage's relevance to it. A chunk_id \
whose file changed since it was cited is reported as gone: search again."""

Query = Annotated[
    str,
    Field(min_length=1, description="What to look for, in the user's words or your own."),
]
K = Annotated[int, Field(ge=1, le=MAX_K, description="How many passages to return (1-50).")]
SearchMode = Annotated[
    Literal["similarity", "mmr", "hybrid"] | None,
    Field(
        description="similarity: nearest by meaning; mmr: nearest but varied (fewer passages "
        "saying the same); hybrid: meaning plus exact words (names, codes, numbers). "
        "Default: the server's setting."
    ),
]
Where = Annotated[
    list[str] | None,
    Field(
        max_length=MAX_FILTERS,
        description="Only search some files; every filter must match: file=PATTERN "
        "(wildcards allowed, e.g. file=*timetable*), folder=PATH (e.g. folder=docs/ferry) or "
        "type=EXT (e.g. type=pdf). Names as list_sources shows them.",
    ),
]


class CallProblem(ToolError):
    """Why a call failed, in one line, and the argument to fix (None: nothing to fix in it)."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class LibraryServer(MCPServer[Any]):
    """`MCPServer` whose tool errors are the one-line messages of the rest of the app: the SDK
    prefixes them ("Error executing tool ...") and gives pydantic's multi-line report for a bad
    argument; here each is one line naming the argument, with `field` in structured content."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Any = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # a crash: the SDK logs it and tells the caller no more than its name
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, CallProblem):
                return tool_error(cause.message, cause.field)
            if isinstance(cause, ValidationError):
                field, message = first_problem(cause)
                return tool_error(message, field)
            raise


def tool_error(message: str, field: str | None) -> CallToolResult:
    log.info("tool error: %s", message)
    data: dict[str, Any] = {"error": message}
    if field is not None:
        data["field"] = field
    return CallToolResult(
        content=[TextContent(type="text", text=message)], structured_content=data, is_error=True
    )


def first_problem(error: ValidationError) -> tuple[str | None, str]:
    """pydantic's report as one line: `k: Input should be less than or equal to 50`."""
    problems = []
    first: str | None = None
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        field = loc[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
        if item["type"] == "missing_argument" or item["type"] == "missing":
            text = f"{field}: required"
        else:
            text = f"{field}: {item['msg']}"
        problems.append(text)
        first = first or (loc[0] if loc else None)
    return first, "; ".join(problems) + "."


def rejected(exc: RequestRejected) -> CallProblem:
    field = {"model": "chain"}.get(exc.param or "", exc.param)
    return CallProblem(exc.message, field)


def build_mcp_server(service: AnswerService, *, own_loop: bool = False) -> LibraryServer:
    """The server over the service's shared resources. `own_loop`: the MCP server runs the
    event loop (stdio), so it sets the service up on it and closes it at the end; mounted in
    `app.serve`, the web app's lifespan does both."""
    lookup = LibraryLookup(service)

    @asynccontextmanager
    async def lifespan(server: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        if own_loop:
            service.use_loop(asyncio.get_running_loop())
            service.start_following()
        try:
            yield {}
        finally:
            if own_loop:
                service.close()

    server = LibraryServer(
        "localrag",
        title="localrag: your documents",
        instructions=INSTRUCTIONS,
        version="0.1.0",
        lifespan=lifespan,
        log_level="WARNING",
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    async def call(function: Any, *args: Any) -> Any:
        """Off the event loop (the store and embedding model block); failures as tool errors."""
        try:
            return await asyncio.to_thread(function, *args)
        except RequestRejected as exc:
            raise rejected(exc) from None
        except AnswerFailed as exc:
            raise CallProblem(exc.message, None) from None

    @server.tool(name="search", description=SEARCH, annotations=read_only)
    async def search(
        query: Query, k: K = 5, mode: SearchMode = None, where: Where = None
    ) -> CallToolResult:
        found: SearchResult = await call(lookup.search, query, k, mode, where)
        return CallToolResult(
            content=[TextContent(type="text", text=search_text(found))],
            structured_content=found.as_json(),
        )

    @server.tool(name="ask", description=ASK, annotations=read_only)
    async def ask(
        question: Annotated[
            str, Field(min_length=1, description="The question, as the user would ask it.")
        ],
        chain: Annotated[
            str | None,
            Field(
                description="Which answering chain (see the server's chains; default: the "
                "server's). 'rag' answers from the passages; others may search more."
            ),
        ] = None,
    ) -> CallToolResult:
        try:
            prepared = service.prepare(AnswerRequest(question, chain=chain))
        except RequestRejected as exc:
            raise rejected(exc) from None
        try:
            answer = await prepared.collect()
        except AnswerFailed as exc:
            raise CallProblem(exc.message, None) from None
        finally:
            prepared.release()
        sources = [s.as_json() for s in answer.sources.sources]
        data: dict[str, Any] = {
            "answer": answer.answer,
            "chain": prepared.chain_name,
            "not_found": answer.sources.not_found,
            "sources": sources,
            "replaced": answer.replaced,
        }
        lines = [answer.answer, ""]
        if answer.replaced:
            lines.insert(0, f"(The model's answer was replaced: {answer.replaced}.)")
        title = "Nearest sources (none relevant):" if answer.sources.not_found else "Sources:"
        lines.append(title)
        for s in answer.sources.sources:
            score = f", score {s.score:.2f}" if s.score is not None else ""
            lines.append(f"[{s.number}] {s.label}{score}; chunk_ids: {', '.join(s.chunk_ids)}")
        return CallToolResult(
            content=[TextContent(type="text", text="\n".join(lines))], structured_content=data
        )

    @server.tool(name="list_sources", description=LIST_SOURCES, annotations=read_only)
    async def list_sources() -> CallToolResult:
        described: dict[str, Any] = await call(lookup.sources)
        return CallToolResult(
            content=[TextContent(type="text", text=sources_text(described))],
            structured_content=described,
        )

    @server.tool(name="get_passage", description=GET_PASSAGE, annotations=read_only)
    async def get_passage(
        chunk_id: Annotated[
            str,
            Field(
                min_length=1,
                max_length=200,
                description="The chunk_id of a passage, from search or ask.",
            ),
        ],
        context: Annotated[
            int,
            Field(
                ge=0,
                le=MAX_CONTEXT,
                description="How many neighbouring chunks to show on each side (0-5).",
            ),
        ] = 1,
        query: Annotated[
            str | None,
            Field(
                min_length=1,
                description="The query the passage was found for; its relevance score (cosine, "
                "0-1) is then returned. Without it, score is null.",
            ),
        ] = None,
    ) -> CallToolResult:
        passage: Passage = await call(lookup.passage, chunk_id, context, query)
        return CallToolResult(
            content=[TextContent(type="text", text=passage_text(passage))],
            structured_content=passage.as_json(),
        )

    @server.resource(
        FILE_URI,
        name="library-file",
        title="A file of the library",
        description="The text of a file in the library as it is indexed (path as search and "
        "list_sources name it, e.g. docs/ferry-timetable.pdf); ?page=N for one page.",
        mime_type="text/plain",
    )
    async def library_file(path: str, page: int | None = None) -> str:
        try:
            text, _ = await asyncio.to_thread(lookup.file, path, page)
        except (RequestRejected, AnswerFailed) as exc:
            raise ResourceError(exc.message) from None
        return text

    return server


def search_text(found: SearchResult) -> str:
    if not found.passages:
        return "No passage found (the filters may exclude every file)."
    lines = []
    if found.not_found:
        lines.append(
            "No passage reached the relevance threshold: these are only the nearest, and the "
            "library probably does not answer this.\n"
        )
    for number, p in enumerate(found.passages, 1):
        where = p.source + (f" (page {p.page})" if p.page is not None else "")
        score = f"score {p.score:.2f}" if p.score is not None else "score -"
        lines.append(f"[{number}] {where}; {score}; chunk_id {p.chunk_id}\n{p.text}\n")
    return "\n".join(lines).rstrip()


def passage_text(p: Passage) -> str:
    where = p.source + (f" (page {p.page})" if p.page is not None else "")
    position = (
        f"; chunk {p.chunk_index + 1} of {p.chunk_count}"
        if p.chunk_index is not None and p.chunk_count
        else ""
    )
    score = f"; relevance {p.score:.2f}" if p.score is not None else ""
    parts = [f"{where}{position}{score}; chunk_id {p.chunk_id}"]
    if p.before:
        parts.append(f"[before]\n{p.before}")
    parts.append(f"[passage]\n{p.text}")
    if p.after:
        parts.append(f"[after]\n{p.after}")
    return "\n\n".join(parts)


def sources_text(described: dict[str, Any]) -> str:
    lines = [f"Library {described['library']} (embedding model {described['embedding_model']}):"]
    for s in described["sources"]:
        lines.append(
            f"- {s['label']}: {s['kind']} {s['path']}; {s['files']} files, {s['chunks']} "
            f"chunks; {s['status']}; last synced {s['last_synced'] or 'never'}"
        )
        lines += [f"    {name}" for name in s.get("stored_files", [])]
        if s.get("stored_files_left_out"):
            lines.append(f"    ... and {s['stored_files_left_out']} more")
    return "\n".join(lines)


def mount_mcp(
    app: Starlette, service: AnswerService, body_limit: int
) -> Callable[[], AbstractAsyncContextManager[None]]:
    """The MCP server at `/mcp` of `app` (Streamable HTTP), stateless: each request stands
    alone, so nothing is kept per client between requests. Returns what the app's lifespan
    must run around serving (the SDK's session manager).

    The SDK's own Host and Origin checks are off: the app's guard (`app/api/guard.py`) checks
    the Host on a loopback bind and the token on any other, for /mcp as for every route, and a
    browser page of another origin is stopped by CORS (MCP requests are JSON POSTs)."""
    server = build_mcp_server(service)
    routes = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        max_request_body_size=body_limit,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    ).routes
    app.router.routes.extend(routes)

    @asynccontextmanager
    async def sessions() -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    return sessions
