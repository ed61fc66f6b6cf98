"""OCR, for real: scanned PDFs, mixed PDFs and images in English and Chinese become Documents
with their page and `ocr: True`; broken and hostile images fail with a reason while the rest of
the folder is read. Images are small, so the whole module takes seconds per file, not minutes.

Needs Debian's fonts-wqy-zenhei (Chinese and Latin glyphs) to draw the test images; .ci/run
installs it."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from loaders.discovery import SourceFile, discover
from loaders.ocr import (
    garbage_fraction,
    join_pieces,
    lines_from_boxes,
    might_need_ocr,
    ocr_image,
    text_layer_usable,
)
from loaders.parsers import UnreadableFile, parse_file
from loaders.pool import Failed, Parsed, PoolLimits, parse_in_workers

pytestmark = pytest.mark.integration

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
# One fact per page of the scanned PDF: (what the page says, what must be read from it).
FACTS = [
    ("The Gullhaven ferry leaves at 07:15.", "07:15"),
    ("The harbour office closes at 16:30.", "16:30"),
    ("听雨桥全长86米。", "听雨桥"),
    ("望霞峰海拔1362米。", "望霞峰"),
]


def draw(lines: list[str], width: int = 720, size: int = 30) -> Image.Image:
    """Black text on white, one line per entry, as a 150 dpi scan of large print."""
    if not FONT.is_file():
        pytest.fail(f"{FONT} is missing: apt-get install fonts-wqy-zenhei")
    font = ImageFont.truetype(str(FONT), size, layout_engine=ImageFont.Layout.BASIC)
    # Page-shaped, not a strip: RapidOCR scales an image up until its short side is 736 pixels,
    # which makes a one-line strip a very wide image and slow to read.
    image = Image.new("L", (width, max(width * 3 // 4, 40 + len(lines) * size * 2)), 255)
    canvas = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        canvas.text((30, 20 + n * size * 2), line, font=font, fill=0)
    return image


def scanned_pdf(path: Path, pages: list[Image.Image | str]) -> None:
    """A PDF whose pages are images (a scan), or text (a string: a real text layer)."""
    from fpdf import FPDF

    pdf = FPDF(format=(105, 148))  # A6, in millimetres
    pdf.set_auto_page_break(auto=False)
    for page in pages:
        pdf.add_page()
        if isinstance(page, str):
            pdf.set_font("helvetica", size=12)
            pdf.set_xy(10, 20)
            pdf.multi_cell(85, 6, page)
        else:
            buffer = io.BytesIO()
            page.save(buffer, format="JPEG", quality=85)
            buffer.seek(0)
            pdf.image(buffer, x=0, y=10, w=105)
    pdf.output(str(path))


def bomb_png(path: Path, side: int = 100_000) -> None:
    """A PNG that declares side x side pixels (10 gigapixels) in a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1000)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    scanned_pdf(folder / "scanned.pdf", [draw([text]) for text, _ in FACTS])
    scanned_pdf(
        folder / "mixed.pdf",
        [
            "Minutes of the ferry cooperative. The annual meeting was held on 14 March.",
            draw(["The new pier opens in May 2026."]),
        ],
    )
    draw(["Notice to mariners", "The North Slip is closed."]).save(folder / "notice.png")
    draw(["岚溪镇停水通告", "明天上午八点停水。"]).convert("RGB").save(
        folder / "停水.jpg", quality=90
    )
    frames = [draw(["Page one: the tide table."]), draw(["第二页：潮汐时刻表。"])]
    frames[0].save(folder / "tides.tiff", save_all=True, append_images=frames[1:])
    draw(["Bitmap of the quay"]).save(folder / "quay.bmp")
    draw(["WebP of the quay"]).save(folder / "quay.webp", lossless=True)
    return folder


# --- reading order (no engine) ---------------------------------------------------------------


@pytest.mark.unit
def test_boxes_are_read_in_lines_top_to_bottom_left_to_right() -> None:
    def box(left: float, top: float, right: float, bottom: float) -> list[tuple[float, float]]:
        return [(left, top), (right, top), (right, bottom), (left, bottom)]

    runs = [
        (box(400, 102, 600, 130), "Saltwren", 0.9),  # same line as "Vessel:", a bit lower
        (box(10, 160, 300, 190), "第二行", 0.8),
        (box(10, 100, 200, 128), "Vessel:", 1.0),
        (box(310, 158, 500, 189), "没有空格", 0.8),
        (box(10, 10, 300, 40), "Title", 1.0),
    ]
    lines = lines_from_boxes(runs)
    assert [line.text for line in lines] == ["Title", "Vessel: Saltwren", "第二行没有空格"]
    assert lines[1].box == (10, 100, 600, 130)
    assert join_pieces(["岚溪", "Lanxi", "镇"]) == "岚溪 Lanxi 镇"


@pytest.mark.unit
def test_the_text_layer_rule() -> None:
    a4 = 8.27 * 11.69
    page = "The annual meeting was held on 14 March. " * 20
    assert text_layer_usable(page, a4, image_coverage=1.0)  # dense text over a scan: kept
    assert not text_layer_usable("", a4, image_coverage=0.0)
    assert not text_layer_usable("Scanned with OfficeScan", a4, image_coverage=1.0)  # a stamp
    assert text_layer_usable("Annual report 2024", a4, image_coverage=0.0)  # a title page
    assert not text_layer_usable("\ufffd\ue001\ue002 (cid:12)(cid:13)" * 30, a4, 0.0)
    assert garbage_fraction("(cid:3)ab") == pytest.approx(7 / 9)
    assert not might_need_ocr(page, a4)


# --- real OCR --------------------------------------------------------------------------------


def test_ocr_image_reads_english_and_chinese_in_order() -> None:
    page = ocr_image(draw(["First line", "Name:                Saltwren", "听雨桥全长86米"]))
    assert [line.text for line in page.lines] == page.text.split("\n")
    lines = page.text.split("\n")
    assert lines[0] == "First line"
    assert lines[1].replace(" ", "") == "Name:Saltwren"  # two runs, one line
    assert "听雨桥" in lines[2]
    assert 0.8 < page.confidence <= 1.0
    assert ocr_image(Image.new("RGB", (300, 100), "white")).text == ""


def test_a_scanned_pdf_is_read_page_by_page(scans: Path) -> None:
    documents = parse_file(scans / "scanned.pdf", "scanned.pdf")
    assert [d.metadata["page"] for d in documents] == [1, 2, 3, 4]
    for document, (_, fact) in zip(documents, FACTS, strict=True):
        assert fact in document.page_content, document.page_content
        assert document.metadata["ocr"] is True
        assert document.metadata["type"] == "pdf"
    assert (documents.pages, documents.ocr_pages) == (4, 4)


def test_a_mixed_pdf_keeps_its_text_layer_and_reads_its_scan(scans: Path) -> None:
    documents = parse_file(scans / "mixed.pdf", "mixed.pdf")
    text, scan = documents
    assert text.metadata == {"source": "mixed.pdf", "type": "pdf", "page": 1}
    assert "annual meeting was held on 14 March" in " ".join(text.page_content.split())
    assert scan.metadata == {"source": "mixed.pdf", "type": "pdf", "page": 2, "ocr": True}
    assert "May 2026" in scan.page_content
    assert (documents.pages, documents.ocr_pages) == (2, 1)


def test_images_are_documents(scans: Path) -> None:
    png = parse_file(scans / "notice.png", "notice.png")
    assert png[0].page_content.split("\n") == ["Notice to mariners", "The North Slip is closed."]
    assert png[0].metadata == {"source": "notice.png", "type": "png", "page": 1, "ocr": True}

    jpeg = parse_file(scans / "停水.jpg", "停水.jpg")
    assert "停水通告" in jpeg[0].page_content
    assert "八点" in jpeg[0].page_content

    tiff = parse_file(scans / "tides.tiff", "tides.tiff")
    assert [d.metadata["page"] for d in tiff] == [1, 2]
    assert "tide table" in tiff[0].page_content
    assert "潮汐" in tiff[1].page_content
    assert tiff.ocr_pages == 2

    assert "Bitmap" in parse_file(scans / "quay.bmp", "quay.bmp")[0].page_content
    assert "WebP" in parse_file(scans / "quay.webp", "quay.webp")[0].page_content


def test_an_image_without_text_says_so(tmp_path: Path) -> None:
    Image.new("RGB", (400, 300), (200, 220, 240)).save(tmp_path / "sky.png")
    with pytest.raises(UnreadableFile, match=r"no text found by OCR \(1 page read\)"):
        parse_file(tmp_path / "sky.png", "sky.png")


def test_bad_images_and_pdfs_fail_with_reasons_and_the_rest_is_read(
    scans: Path, tmp_path: Path
) -> None:
    """In the worker pool, under the default time and memory limits (PARSE_MEMORY_MB 2048),
    as an ingest runs them."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ["notice.png", "mixed.pdf"]:
        (folder / name).write_bytes((scans / name).read_bytes())
    bomb_png(folder / "bomb.png")
    good = (scans / "notice.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "random.jpg").write_bytes(bytes(range(256)) * 20)
    (folder / "empty.webp").write_bytes(b"")
    from fpdf import FPDF

    locked = FPDF()
    locked.add_page()
    locked.set_font("helvetica", size=12)
    locked.cell(0, 10, "Secret minutes")
    locked.set_encryption(owner_password="owner", user_password="user")
    locked.output(str(folder / "locked.pdf"))

    found = discover(folder)
    assert not found.skipped
    results = {r.file.source: r for r in parse_in_workers(found.files, PoolLimits())}
    reasons = {name: r.reason for name, r in results.items() if isinstance(r, Failed)}
    assert set(reasons) == {"bomb.png", "truncated.png", "random.jpg", "empty.webp", "locked.pdf"}
    assert reasons["bomb.png"] == (
        "image is 10,000 megapixels, over the limit of 89 megapixels (a decompression bomb?)"
    )
    assert reasons["truncated.png"].startswith("damaged image (")
    assert reasons["random.jpg"] == "not a readable JPG image (damaged, or another format)"
    assert reasons["empty.webp"] == "empty file"
    assert reasons["locked.pdf"] == "encrypted PDF (needs a password)"

    notice, mixed = results["notice.png"], results["mixed.pdf"]
    assert isinstance(notice, Parsed)
    assert isinstance(mixed, Parsed)
    assert "North Slip" in notice.documents[0].page_content
    assert (notice.pages, notice.ocr_pages) == (1, 1)
    assert (mixed.pages, mixed.ocr_pages) == (2, 1)


def test_a_large_multi_frame_tiff_frame_is_refused_as_a_bomb(tmp_path: Path) -> None:
    """Pillow checks only the first frame's size when it opens a TIFF."""
    frames = [Image.new("1", (100, 100), 1), Image.new("1", (12_000, 8_000), 1)]
    frames[0].save(tmp_path / "two.tiff", save_all=True, append_images=frames[1:])
    with pytest.raises(UnreadableFile, match="over the limit of 89 megapixels"):
        parse_file(tmp_path / "two.tiff", "two.tiff")


def test_ocr_files_are_discovered(scans: Path) -> None:
    names = {f.source for f in discover(scans).files}
    assert names >= {"notice.png", "停水.jpg", "tides.tiff", "quay.bmp", "quay.webp"}
    assert isinstance(SourceFile(scans / "notice.png", "notice.png"), SourceFile)
