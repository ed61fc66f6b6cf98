"""The MCP server as clients use it: `python -m app.mcp` spawned by the SDK's own stdio client
(what Claude Desktop and VS Code do), and `/mcp` of a real `python -m app.serve` through the
SDK's Streamable HTTP client, token rule included. The Ollama test server is the chat and
embedding model (bag-of-words vectors), so every search has a known best file."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent, TextResourceContents

from app.paths import PROJECT_ROOT, SAMPLE_DOCS_DIR
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.serve_process import ServeProcess, serve_env

pytestmark = pytest.mark.integration

TOKEN = "a-test-token-of-32-characters-xx"
DOCS = {
    "ferry.txt": "Ferry timetable. The first ferry leaves the harbour at 06:40 on weekdays; "
    "the ferry is back in the harbour by night.",
    "bakery.txt": "Bakery prices. A loaf of rye bread costs three crowns at the bakery; "
    "rye bread is what a loaf there means.",
    "lighthouse.txt": "Lighthouse log. The lighthouse lamp flashes white every nine seconds; "
    "how often the lamp flashes is set by the lighthouse keeper.",
}
PDF = "annual-report-2024.pdf"  # the sample observatory report: several pages


# What a client sends first over HTTP (the SDK's own client does it in `http_session`).
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}


def reply(body: dict[str, Any]) -> str:
    """The chat model: a one-line answer citing source 1 (the support check accepts it)."""
    return "The lighthouse lamp flashes white every nine seconds [1]."


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(reply=reply, embedder=bag_of_words_embedding) as server:
        yield server


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, ollama: OllamaTestServer) -> dict[str, str]:
    """One library for the module: the first process ingests it, the others open it."""
    folder = tmp_path_factory.mktemp("corpus") / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    shutil.copy(SAMPLE_DOCS_DIR / "observatory" / PDF, folder / PDF)
    return serve_env(
        tmp_path_factory.mktemp("mcp") / "chroma",
        OLLAMA_BASE_URL=ollama.base_url,
        EMBEDDING_PROVIDER="ollama",
        CHAT_PROVIDER="ollama",
        DOCS_DIR=str(folder),
        INGEST_WORKERS="1",
    )


def data(result: CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None
    return result.structured_content


def text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


@asynccontextmanager
async def stdio_session(env: dict[str, str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "app.mcp"], env=env, cwd=str(PROJECT_ROOT)
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def walk_the_tools(session: ClientSession) -> None:
    """What a client does: list the tools, call each, read a cited file; bad calls fail with
    one line naming the argument."""
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == {"search", "ask", "list_sources", "get_passage"}
    search_schema = tools["search"].input_schema
    assert search_schema["required"] == ["query"]
    assert search_schema["properties"]["k"]["maximum"] == 50
    assert all(len(tool.description or "") > 100 for tool in tools.values())

    # search: the best passage is the lighthouse file's, with its chunk id and score
    found = await session.call_tool("search", {"query": "how often does the lighthouse lamp flash"})
    assert not found.is_error
    best = data(found)["passages"][0]
    assert best["source"] == "docs/lighthouse.txt"
    assert 0 < best["score"] <= 1
    assert len(best["chunk_id"]) == 40
    assert f"chunk_id {best['chunk_id']}" in text(found)
    assert data(found)["not_found"] is False

    # where: only the files a filter allows
    only_pdf = await session.call_tool(
        "search", {"query": "telescope mirror", "k": 3, "where": ["type=pdf"]}
    )
    assert {p["source"] for p in data(only_pdf)["passages"]} == {f"docs/{PDF}"}
    assert all(isinstance(p["page"], int) for p in data(only_pdf)["passages"])

    # get_passage: the passage and its neighbours in the same file
    pdf_hit = data(only_pdf)["passages"][0]
    passage = await session.call_tool("get_passage", {"chunk_id": pdf_hit["chunk_id"]})
    assert not passage.is_error
    shown = data(passage)
    assert shown["text"] == pdf_hit["text"]
    assert shown["source"] == f"docs/{PDF}"
    assert shown["before"] or shown["after"]  # a report has more than one chunk
    assert "[passage]" in text(passage)
    assert shown["score"] is None  # no query, no relevance
    scored = data(
        await session.call_tool(
            "get_passage", {"chunk_id": pdf_hit["chunk_id"], "query": "telescope mirror"}
        )
    )
    assert scored["score"] == pytest.approx(pdf_hit["score"], abs=1e-3)

    # ask: the chain's answer with numbered sources carrying their chunk ids
    asked = await session.call_tool("ask", {"question": "How often does the lighthouse flash?"})
    assert not asked.is_error, text(asked)
    answer = data(asked)
    assert "nine seconds" in answer["answer"]
    assert answer["sources"][0]["number"] == 1
    assert answer["sources"][0]["file"] == "docs/lighthouse.txt"
    assert answer["sources"][0]["chunk_ids"]
    assert "[1] docs/lighthouse.txt" in text(asked)

    # list_sources: the library, its source on disk, the stored files
    listed = data(await session.call_tool("list_sources", {}))
    (source,) = listed["sources"]
    assert source["label"] == "docs"
    assert source["status"] == "ok"
    assert f"docs/{PDF}" in source["stored_files"]
    assert source["chunks"] > 0

    # a cited file as a resource: the whole text, and one page of the PDF
    templates = (await session.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["localrag://library/{+path}{?page}"]
    whole = (await session.read_resource("localrag://library/docs/ferry.txt")).contents[0]
    assert isinstance(whole, TextResourceContents)
    assert whole.text == DOCS["ferry.txt"]
    cited = f"localrag://library/docs/{PDF}?page={pdf_hit['page']}"
    page = (await session.read_resource(cited)).contents[0]
    assert isinstance(page, TextResourceContents)
    assert pdf_hit["text"] in page.text
    report = (await session.read_resource(f"localrag://library/docs/{PDF}")).contents[0]
    assert isinstance(report, TextResourceContents)
    assert len(report.text) > len(page.text)

    # bad calls: one line, naming the argument, as a tool error the model can read
    too_many = await session.call_tool("search", {"query": "ferry", "k": 500})
    assert too_many.is_error
    assert data(too_many)["field"] == "k"
    assert text(too_many).startswith("k: ")
    assert "\n" not in text(too_many)
    missing = await session.call_tool("search", {})
    assert missing.is_error
    assert data(missing)["field"] == "query"
    bad_filter = await session.call_tool("search", {"query": "ferry", "where": ["size=big"]})
    assert data(bad_filter)["field"] == "where[0]"
    assert "Cannot read the filter 'size=big'" in text(bad_filter)
    gone = await session.call_tool("get_passage", {"chunk_id": "0" * 40})
    assert gone.is_error
    assert data(gone)["field"] == "chunk_id"
    assert "No passage has the chunk id" in text(gone)
    chain = await session.call_tool("ask", {"question": "ferry?", "chain": "nonesuch"})
    assert chain.is_error
    assert data(chain)["field"] == "chain"
    with pytest.raises(MCPError, match=r"no file docs/nowhere\.txt"):
        await session.read_resource("localrag://library/docs/nowhere.txt")


async def test_a_desktop_client_over_stdio(env: dict[str, str]) -> None:
    async with stdio_session(env) as session:
        assert session.initialize_result is not None
        assert session.initialize_result.server_info.name == "localrag"
        await walk_the_tools(session)


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[ServeProcess]:
    process = ServeProcess(env | {"API_TOKEN": TOKEN}).start()
    yield process
    assert process.stop() == 0, "".join(process.log)


@asynccontextmanager
async def http_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with (
        client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_served_mcp_answers_with_the_token(server: ServeProcess, env: dict[str, str]) -> None:
    async with http_session(server.url + "/mcp", TOKEN) as session:
        await walk_the_tools(session)


def test_served_mcp_refuses_without_the_token(server: ServeProcess) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    refused = httpx.post(server.url + "/mcp", json=INITIALIZE, headers=headers)
    assert refused.status_code == 401
    assert "API_TOKEN" in json.dumps(refused.json())
    wrong = httpx.post(
        server.url + "/mcp",
        json=INITIALIZE,
        headers=headers | {"Authorization": "Bearer not-the-token-but-long-enough-xxxx"},
    )
    assert wrong.status_code == 401
    foreign = httpx.post(
        server.url + "/mcp",
        json=INITIALIZE,
        headers=headers | {"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"},
    )
    assert foreign.status_code == 400  # a loopback server answers only to loopback names


def test_served_mcp_on_every_address_takes_only_the_token(env: dict[str, str]) -> None:
    """Bound beyond loopback (as for a laptop on a LAN), /mcp needs the token and no longer
    checks the Host header: other machines reach it by name."""
    with ServeProcess(env | {"API_TOKEN": TOKEN}, "--host", "0.0.0.0") as process:
        url = process.url.replace("0.0.0.0", "127.0.0.1") + "/mcp"
        headers = {"Accept": "application/json, text/event-stream", "Host": "laptop.lan"}
        refused = httpx.post(url, json=INITIALIZE, headers=headers)
        assert refused.status_code == 401
        assert "API_TOKEN" in json.dumps(refused.json())
        accepted = httpx.post(
            url, json=INITIALIZE, headers=headers | {"Authorization": f"Bearer {TOKEN}"}
        )
        assert accepted.status_code == 200
        assert "localrag" in accepted.text

        async def tools() -> list[str]:
            async with http_session(url, TOKEN) as session:
                return sorted(tool.name for tool in (await session.list_tools()).tools)

        assert asyncio.run(tools()) == ["ask", "get_passage", "list_sources", "search"]


def test_a_cited_passage_resolves_over_the_api(server: ServeProcess) -> None:
    """The chunk ids an answer's sources carry open the passage with its surroundings."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "rag", "messages": [{"role": "user", "content": "lighthouse lamp?"}]},
        headers=headers,
        timeout=60,
    ).json()
    cited = answer["sources"][0]
    assert cited["file"] == "docs/lighthouse.txt"
    shown = httpx.get(
        f"{server.url}/api/passages/{cited['chunk_ids'][0]}", params={"context": 2}, headers=headers
    )
    assert shown.status_code == 200
    assert shown.json()["source"] == "docs/lighthouse.txt"
    assert shown.json()["text"] == DOCS["lighthouse.txt"]
    gone = httpx.get(f"{server.url}/api/passages/{'0' * 40}", headers=headers)
    assert gone.status_code == 404
    assert "No passage has the chunk id" in gone.text
    too_wide = httpx.get(
        f"{server.url}/api/passages/{cited['chunk_ids'][0]}",
        params={"context": 99},
        headers=headers,
    )
    assert too_wide.status_code == 422
    assert "context" in too_wide.text
