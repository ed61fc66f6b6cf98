"""A status for every file, as a user meets it: `python -m app.ingest FOLDER` on a folder of a
text PDF, a scanned PDF, a photographed notice in Chinese and English, a file of a type we do not
read and a damaged PDF, then `python -m app.ingest --files` shows each with its status, reason,
pages and OCR'd pages; a second run reads no scan again. Real processes, real OCR, small images
(the OCR takes seconds); embeddings from the Ollama test server.

Needs Debian's fonts-wqy-zenhei to draw the scans (.ci/run installs it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from app.config import load_settings
from tests.ollama_server import OllamaTestServer
from tests.test_crash_safety import fresh_store
from tests.test_ocr import draw, scanned_pdf

pytestmark = pytest.mark.integration

EXPECTED = {  # file -> status, pages, OCR'd pages, words the reason holds
    "report.pdf": ("indexed", 2, 0, ""),
    "scanned.pdf": ("ocr", 2, 2, ""),
    "notice.png": ("ocr", 1, 1, ""),
    "drawing.xyz": ("skipped", 0, 0, "unsupported file type"),
    "damaged.pdf": ("failed", 0, 0, "damaged pdf"),
}


def photo(lines: list[str]) -> Image.Image:
    """A phone photo of a printed notice: tilted, on grey uneven paper, blurred, noisy."""
    page = draw(lines).rotate(2.5, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
    shade = Image.linear_gradient("L").resize(page.size).point(lambda v: 200 + v // 6)
    page = Image.composite(page, shade, page.point(lambda v: 255 if v < 128 else 0))
    page = page.filter(ImageFilter.GaussianBlur(0.8))
    grain = np.random.default_rng(19).integers(-18, 19, (page.height, page.width))
    noisy = np.clip(np.asarray(page, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy).convert("RGB")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "inbox")  # the source's label


def make_folder(docs: Path) -> Path:
    docs.mkdir()
    scanned_pdf(
        docs / "report.pdf",
        ["The quarterly report of the ferry cooperative.", "Ticket sales rose by a tenth."],
    )
    scanned_pdf(
        docs / "scanned.pdf",
        [draw(["The Gullhaven ferry leaves at 07:15."]), draw(["听雨桥全长86米。"])],
    )
    photo(["Notice: the North Slip is closed.", "北码头今天关闭。"]).save(docs / "notice.png")
    (docs / "drawing.xyz").write_bytes(b"\x00CAD drawing\x00")
    (docs / "damaged.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R")
    return docs


def ingest(run_module: Callable[..., Any], server: OllamaTestServer, *args: str) -> Any:
    result = run_module(
        "app.ingest",
        *args,
        EMBEDDING_PROVIDER="ollama",
        OLLAMA_BASE_URL=server.base_url,
        COLUMNS="200",  # the table's file names unwrapped
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.timeout(600)
def test_every_file_has_a_status_and_an_unchanged_scan_is_not_read_again(
    run_module: Callable[..., Any], folder: Path, ollama_server: OllamaTestServer
) -> None:
    result = ingest(run_module, ollama_server, str(folder), "--json")
    assert result.returncode == 3, result.stdout + result.stderr  # some files did not go in
    report = json.loads(result.stdout)
    assert report["ocr"] == {"files": 2, "pages": 3}

    listed = ingest(run_module, ollama_server, "--files", "--json")
    assert listed.returncode == 0, listed.stderr
    listing = json.loads(listed.stdout)
    files = {row["file"].removeprefix("inbox/"): row for row in listing["files"]}
    assert set(files) == set(EXPECTED)
    for name, (status, pages, ocr_pages, reason) in EXPECTED.items():
        row = files[name]
        assert (row["status"], row["pages"], row["ocr_pages"]) == (status, pages, ocr_pages), row
        assert reason in row["reason"].lower(), row
        assert (row["chunks"] > 0) == (status in ("indexed", "ocr")), row
    assert listing["counts"] == {"indexed": 1, "ocr": 2, "skipped": 1, "failed": 1}

    # What OCR read is searchable, and cites its page and that OCR read it.
    collection = fresh_store(load_settings()).collection(report["collection"])
    assert collection is not None
    chunks = collection.get([chunk_id for chunk_id, _ in collection.rows()])
    scanned = {
        (c.metadata["page"], c.metadata.get("ocr")): c.text
        for c in chunks
        if c.metadata["source"] == "inbox/scanned.pdf"
    }
    assert "07:15" in scanned[(1, True)]
    assert "听雨桥" in scanned[(2, True)]
    notice = [c for c in chunks if c.metadata["source"] == "inbox/notice.png"]
    assert "North Slip" in notice[0].text
    assert "码头" in notice[0].text

    # The table a person reads; a status filter; one file by its path; a name not in it.
    table = ingest(run_module, ollama_server, "--files", "--status", "ocr")
    assert table.returncode == 0, table.stderr
    assert "scanned.pdf" in table.stdout, table.stdout
    assert "notice.png" in table.stdout, table.stdout
    assert "report.pdf" not in table.stdout
    assert "drawing.xyz" not in table.stdout
    assert "5 files: 1 indexed, 2 ocr, 1 skipped, 1 failed." in " ".join(table.stdout.split())
    one = ingest(run_module, ollama_server, "--files", "--json", str(folder / "damaged.pdf"))
    assert [row["file"] for row in json.loads(one.stdout)["files"]] == ["inbox/damaged.pdf"]
    unknown = ingest(run_module, ollama_server, "--files", "nowhere")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "nowhere" in unknown.stderr
    assert "inbox" in unknown.stderr

    # A second sync reads nothing again: the scans are not OCR'd twice, failures not retried.
    again = json.loads(ingest(run_module, ollama_server, "--json").stdout)
    assert again["ocr"] == {"files": 0, "pages": 0}
    assert again["files"]["new"] == again["files"]["changed"] == 0
    assert again["files"]["unchanged"] == 3
