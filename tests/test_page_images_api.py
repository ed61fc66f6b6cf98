"""The cited page over HTTP, against a real `python -m app.serve` with a token: the PNG of the
page an answer's source names (a PDF page, an OCR'd image), the passage's own relevance for a
question, the passages in the OpenAI-compatible `sources`; and the refusals: a chunk that is
gone, a file that changed on disk since it was indexed, a file with no pages, no token."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.serve_process import ServeProcess, serve_env
from tests.test_page_images import BAND, PAGES, band_top, make_pdf

pytestmark = pytest.mark.integration

TOKEN = "a-test-token-of-32-characters-xx"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
QUESTIONS = {  # question -> (file, page) it finds by its words
    "How often does the lighthouse lamp flash?": ("docs/pages.pdf", 2),
    "When does the first ferry leave the harbour?": ("docs/pages.pdf", 1),
    "What does a loaf of rye bread cost at the bakery?": ("docs/pages.pdf", 3),
}
NOTICE = ["Notice to mariners", "The North Slip is closed."]


def reply(body: dict[str, Any]) -> str:
    return "It is in the first source [1]."


def notice_image() -> Image.Image:
    """A 150 dpi scan of a notice in large print: OCR reads it at ingest."""
    if not FONT.is_file():
        pytest.fail(f"{FONT} is missing: apt-get install fonts-wqy-zenhei")
    font = ImageFont.truetype(str(FONT), 30, layout_engine=ImageFont.Layout.BASIC)
    image = Image.new("L", (720, 540), 255)
    canvas = ImageDraw.Draw(image)
    for n, line in enumerate(NOTICE):
        canvas.text((30, 20 + n * 60), line, font=font, fill=0)
    return image


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = tmp_path_factory.mktemp("corpus") / "docs"  # the source's label: `docs/...`
    docs.mkdir()
    make_pdf(docs / "pages.pdf", PAGES)
    make_pdf(
        docs / "changing.pdf",
        ["Observatory notes. The telescope mirror measures 610 mm across at the observatory."],
    )
    (docs / "notes.txt").write_text("Tide notes. The tide table of the quay is on the wall.")
    notice_image().save(docs / "notice.png")
    return docs


@pytest.fixture(scope="module")
def server(docs: Path) -> Iterator[ServeProcess]:
    with OllamaTestServer(reply=reply, embedder=bag_of_words_embedding) as ollama:
        env = serve_env(
            docs.parent / "chroma",
            OLLAMA_BASE_URL=ollama.base_url,
            EMBEDDING_PROVIDER="ollama",
            CHAT_PROVIDER="ollama",
            DOCS_DIR=str(docs),
            INGEST_WORKERS="1",
            API_TOKEN=TOKEN,
        )
        with ServeProcess(env) as process:
            yield process


def answer(server: ServeProcess, question: str, **extra: Any) -> dict[str, Any]:
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "rag", "messages": [{"role": "user", "content": question}], **extra},
        headers=AUTH,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def cited(server: ServeProcess, question: str) -> dict[str, Any]:
    """The answer's first source."""
    return dict(answer(server, question)["sources"][0])


def page_png(server: ServeProcess, chunk_id: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/passages/{chunk_id}/page.png", params=params, headers=AUTH, timeout=60
    )


def test_the_png_is_the_page_the_source_names(server: ServeProcess) -> None:
    for question, (file, page) in QUESTIONS.items():
        source = cited(server, question)
        assert (source["file"], source["page"]) == (file, page), question
        response = page_png(server, source["chunk_ids"][0], width=600)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-pages"] == "3"
        assert response.headers["x-passage-marked"] == "true"
        image = Image.open(io.BytesIO(response.content)).convert("RGB")
        assert image.width == 600
        scale = 600 / (842 if page == 3 else 595)
        assert abs(band_top(image) / scale - page * BAND) < 3, question  # this page's band
        box = [int(n) for n in response.headers["x-passage-box"].split(",")]
        assert box[1] > band_top(image)  # the passage is marked below the band, where it is


def test_an_ocr_read_image_is_shown_itself(server: ServeProcess) -> None:
    source = cited(server, "Is the North Slip closed, says the notice to mariners?")
    assert (source["file"], source["page"]) == ("docs/notice.png", 1)
    response = page_png(server, source["chunk_ids"][0])  # 1000 asked: never scaled up
    assert response.status_code == 200, response.text
    assert response.headers["x-passage-marked"] == "false"  # a scan has no text layer to mark
    shown = Image.open(io.BytesIO(response.content)).convert("L")
    original = notice_image()
    assert shown.size == original.size
    difference = sum(abs(a - b) for a, b in zip(shown.tobytes(), original.tobytes(), strict=True))
    assert difference / len(original.tobytes()) < 1


def test_refusals_are_json_naming_the_field_and_never_another_page(
    server: ServeProcess, docs: Path
) -> None:
    gone = page_png(server, "0" * 40)
    assert gone.status_code == 404
    assert gone.json()["param"] == "chunk_id"
    assert "No passage has the chunk id" in gone.json()["detail"]

    text = cited(server, "Where is the tide table of the quay?")
    assert text["file"] == "docs/notes.txt"
    no_pages = page_png(server, text["chunk_ids"][0])
    assert no_pages.status_code == 404
    assert "is not a PDF or an image" in no_pages.json()["detail"]

    mirror = cited(server, "How wide is the telescope mirror at the observatory?")
    assert mirror["file"] == "docs/changing.pdf"
    assert page_png(server, mirror["chunk_ids"][0]).status_code == 200
    # Changed on disk, not synced yet: the old chunk still exists, its page may not.
    make_pdf(docs / "changing.pdf", ["A new first page.", "The mirror moved to page two."])
    changed = page_png(server, mirror["chunk_ids"][0])
    assert changed.status_code == 409
    assert changed.headers["content-type"] == "application/json"
    assert "changed on disk since it was indexed" in changed.json()["detail"]
    assert changed.json()["param"] == "chunk_id"
    (docs / "changing.pdf").unlink()
    missing = page_png(server, mirror["chunk_ids"][0])
    assert missing.status_code == 404
    assert "not on disk here now" in missing.json()["detail"]

    for width in (5000, 10, "wide"):
        wrong = page_png(server, text["chunk_ids"][0], width=width)
        assert wrong.status_code == 422
        assert "width" in wrong.json()["message"]


def test_the_page_and_the_passage_need_the_token(server: ServeProcess) -> None:
    chunk_id = cited(server, "How often does the lighthouse lamp flash?")["chunk_ids"][0]
    for path in (f"/api/passages/{chunk_id}/page.png", f"/api/passages/{chunk_id}"):
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length-xxxxx"}):
            refused = httpx.get(server.url + path, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert "API_TOKEN" in refused.text
            assert not refused.content.startswith(b"\x89PNG")
        assert httpx.get(server.url + path, headers=AUTH).status_code == 200


def test_a_passage_has_the_score_its_answer_gave_it_for_the_same_question(
    server: ServeProcess,
) -> None:
    question = "How often does the lighthouse lamp flash?"
    source = cited(server, question)
    url = f"{server.url}/api/passages/{source['chunk_ids'][0]}"
    scored = httpx.get(url, params={"query": question}, headers=AUTH).json()
    assert isinstance(scored["score"], float)
    assert abs(scored["score"] - source["score"]) < 1e-3
    other = httpx.get(url, params={"query": "rye bread at the bakery"}, headers=AUTH).json()
    assert other["score"] < scored["score"] - 0.2  # another question, another relevance
    assert httpx.get(url, headers=AUTH).json()["score"] is None  # no question, no score

    empty = httpx.get(url, params={"query": "  "}, headers=AUTH)
    assert empty.status_code == 422
    assert empty.json()["param"] == "query"
    too_long = httpx.get(url, params={"query": "lamp " * 900}, headers=AUTH)  # 4,000 at most
    assert too_long.status_code == 413
    assert too_long.json()["param"] == "query"
    assert "SERVE_MAX_QUESTION_CHARS" in too_long.json()["detail"]


def test_openai_sources_carry_the_passage_the_model_was_given(server: ServeProcess) -> None:
    question = "How often does the lighthouse lamp flash?"
    whole = answer(server, question)["sources"]
    first = whole[0]
    texts = [
        httpx.get(
            f"{server.url}/api/passages/{chunk_id}", params={"context": 0}, headers=AUTH
        ).json()["text"]
        for chunk_id in first["chunk_ids"]
    ]
    assert first["passage"] == "\n...\n".join(texts)
    assert "lighthouse lamp flashes white" in " ".join(first["passage"].split())
    assert set(first) == {"number", "file", "page", "score", "chunk_ids", "passage"}

    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={"model": "rag", "messages": [{"role": "user", "content": question}], "stream": True},
        headers=AUTH,
        timeout=120,
    ) as response:
        chunks = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
        ]
    last = [c for c in chunks if "sources" in c]
    assert len(last) == 1
    assert last[0]["sources"] == whole


def test_the_page_may_show_images_from_itself_and_its_own_blobs_only(server: ServeProcess) -> None:
    policy = httpx.get(server.url + "/").headers["Content-Security-Policy"]
    directives = dict(d.strip().partition(" ")[::2] for d in policy.split(";"))
    assert set(directives["img-src"].split()) == {"'self'", "data:", "blob:"}
    assert directives["default-src"] == "'none'"
