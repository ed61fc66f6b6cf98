"""A cited page as a picture, drawn from the file: the right page of a PDF (told by where each
page's black band is, not by the renderer's own word), marked where its text layer holds the
passage, bounded in size whatever the page's shape; image files scaled down, a TIFF's frames as
pages; and nothing reached through a link or outside a source."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from app.retrieval.page_images import (
    MAX_PIXELS,
    PageImage,
    PageUnavailable,
    RenderedPages,
    library_file,
    passage_span,
    render_page,
)
from app.store.library import LibrarySource

pytestmark = pytest.mark.unit

BAND = 100  # points: page n has a black band n * BAND points from its top
TEXT_TOP = 400
PAGES = [
    "Ferry timetable. The first ferry leaves the harbour at 06:40 on weekdays; the ferry is "
    "back in the harbour by night, whatever the weather says.",
    "Lighthouse log. The lighthouse lamp flashes white every nine seconds; how often the lamp "
    "flashes is set by the lighthouse keeper, who writes it down.",
    "Bakery prices. A loaf of rye bread costs three crowns at the bakery on the square.",
]
MARK = (255, 221, 87)


def make_pdf(path: Path, texts: list[str], landscape: tuple[int, ...] = (3,)) -> Path:
    """One page per text, A4 (landscape for the page numbers in `landscape`): a black band
    n * BAND points from the top of page n, the text below it."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format="A4")
    pdf.set_auto_page_break(auto=False)
    for number, text in enumerate(texts, 1):
        pdf.add_page(orientation="L" if number in landscape else "P")
        pdf.set_fill_color(0)
        pdf.rect(0, number * BAND, pdf.w, 30, style="F")
        pdf.set_font("helvetica", size=14)
        pdf.set_xy(40, TEXT_TOP)
        pdf.multi_cell(400, 18, text)
    pdf.output(str(path))
    return path


def picture(image: PageImage) -> Image.Image:
    assert image.png.startswith(b"\x89PNG\r\n\x1a\n")
    decoded = Image.open(io.BytesIO(image.png))
    assert decoded.size == (image.width, image.height)
    return decoded.convert("RGB")


def band_top(image: Image.Image) -> int:
    """The first row that is black across the page."""
    grey = image.convert("L")
    for y in range(grey.height):
        if grey.crop((0, y, grey.width, y + 1)).getextrema()[1] < 60:
            return y
    raise AssertionError("no black band on the page")


def yellow_rows(image: Image.Image) -> list[int]:
    pixels = image.load()
    assert pixels is not None
    return sorted(
        {y for y in range(image.height) for x in range(0, image.width, 2) if pixels[x, y] == MARK}
    )


def test_each_page_is_drawn_from_its_own_page_of_the_file(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "pages.pdf", PAGES)
    for number in (1, 2, 3):
        drawn = render_page(pdf, number, 800)
        assert drawn.pages == 3
        image = picture(drawn)
        assert image.width == 800
        points_wide = 842 if number == 3 else 595
        scale = 800 / points_wide
        assert abs(band_top(image) / scale - number * BAND) < 3, number
        assert (image.height > image.width) == (number != 3)  # page 3 lies on its side


def test_the_passage_is_marked_where_its_text_is_and_nowhere_else(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "pages.pdf", PAGES)
    # The parser's text breaks lines elsewhere than the text layer: whitespace does not count.
    passage = PAGES[1].replace("; how", ";\nhow").replace(" the lamp", "  the\tlamp")
    drawn = render_page(pdf, 2, 600, passage)
    assert drawn.marked
    image = picture(drawn)
    rows = yellow_rows(image)
    scale = 600 / 595
    assert rows, "the passage is marked"
    assert TEXT_TOP - 3 < rows[0] / scale < TEXT_TOP + 5
    assert rows[-1] / scale < TEXT_TOP + 5 * 18  # three lines of text, no more
    assert drawn.mark_box is not None
    assert abs(drawn.mark_box[1] - rows[0]) <= 1

    elsewhere = render_page(pdf, 1, 600, passage)  # the passage is not on page 1
    assert not elsewhere.marked
    assert yellow_rows(picture(elsewhere)) == []
    assert not render_page(pdf, 2, 600, "words that are on no page at all").marked


def test_a_page_that_is_not_there_is_refused_never_another(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "pages.pdf", PAGES)
    for page in (0, 4):
        with pytest.raises(PageUnavailable, match=f"no page {page} \\(it has 3 pages\\)"):
            render_page(pdf, page, 800)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\nnot a pdf")
    with pytest.raises(PageUnavailable, match="PDFium cannot open it"):
        render_page(tmp_path / "broken.pdf", 1, 800)


def test_a_huge_or_thin_page_is_drawn_within_the_pixel_bound(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(300, 14_000))  # a till roll: 47 times as tall as wide
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.text(20, 40, "A very long receipt")
    pdf.add_page(format=(14_400, 14_400))  # the largest page PDF allows, 5 m square
    pdf.output(str(tmp_path / "roll.pdf"))
    for page in (1, 2):
        drawn = render_page(tmp_path / "roll.pdf", page, 1200)
        assert drawn.width <= 1200
        assert drawn.width * drawn.height <= MAX_PIXELS
    tall = render_page(tmp_path / "roll.pdf", 1, 1200)
    assert tall.width < 1200  # narrower than asked, so its height stays bounded
    assert tall.height > 10 * tall.width


def test_an_image_is_its_own_page_scaled_down_never_up(tmp_path: Path) -> None:
    photo = Image.new("RGB", (3000, 2000), (200, 30, 30))
    photo.paste((30, 30, 200), (0, 0, 1500, 2000))  # left half blue
    photo.save(tmp_path / "scan.jpg", quality=90)
    drawn = render_page(tmp_path / "scan.jpg", 1, 600)
    assert (drawn.width, drawn.height, drawn.pages, drawn.marked) == (600, 400, 1, False)
    image = picture(drawn)
    left, right = image.getpixel((100, 200)), image.getpixel((500, 200))
    assert isinstance(left, tuple)
    assert isinstance(right, tuple)
    assert left[2] > 150 > left[0]
    assert right[0] > 150 > right[2]

    Image.new("L", (300, 200), 128).save(tmp_path / "small.png")
    assert (render_page(tmp_path / "small.png", 1, 1000).width) == 300

    frames = [Image.new("RGB", (400, 300), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "two.tiff", save_all=True, append_images=frames[1:])
    second = picture(render_page(tmp_path / "two.tiff", 2, 400))
    assert second.getpixel((200, 150)) == (0, 255, 0)
    with pytest.raises(PageUnavailable, match="no page 3"):
        render_page(tmp_path / "two.tiff", 3, 400)
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    with pytest.raises(PageUnavailable, match="not a readable image"):
        render_page(tmp_path / "fake.png", 1, 400)


def test_only_pdfs_and_images_are_pictures(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("text")
    with pytest.raises(PageUnavailable, match="only PDF pages and images"):
        render_page(tmp_path / "notes.txt", 1, 400)


def test_a_passage_is_found_by_its_ends_whitespace_aside() -> None:
    page = "Title\r\nThe first line of it\r\nand the second line. Then other text."
    span = passage_span(page, "The first line of it and the second line.")
    assert span is not None
    assert page[span[0] : span[1] + 1] == "The first line of it\r\nand the second line."
    assert passage_span(page, "not on this page") is None
    assert passage_span(page, "   ") is None
    # The head found but the tail far past where the passage's length puts it: not this.
    long_page = "A" * 50 + " filler " * 40 + "B" * 50
    assert passage_span(long_page, "A" * 50 + " " + "B" * 50) is None


def test_a_stored_name_leads_only_to_a_regular_file_inside_its_source(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.pdf").write_bytes(b"%PDF")
    (tmp_path / "secret.pdf").write_bytes(b"%PDF")
    (root / "link.pdf").symlink_to(tmp_path / "secret.pdf")
    (root / "linked").symlink_to(root / "sub")
    source = LibrarySource("docs", str(root), "folder", "now")
    assert library_file(source, "docs/sub/a.pdf") == root / "sub" / "a.pdf"
    for name in (
        "docs/link.pdf",  # a link: the sync never followed it
        "docs/linked/a.pdf",  # a linked folder
        "docs/../secret.pdf",
        "docs/sub//a.pdf",
        "docs/sub",  # a folder
        "docs/gone.pdf",
        "other/sub/a.pdf",  # another source's name
    ):
        assert library_file(source, name) is None, name
    single = LibrarySource("report.pdf", str(root / "sub" / "a.pdf"), "file", "now")
    assert library_file(single, "report.pdf") == root / "sub" / "a.pdf"


def test_the_cache_keeps_the_latest_pages_within_its_bytes() -> None:
    cache = RenderedPages(limit=250)
    for n in range(4):
        cache.put(n, PageImage(b"x" * 100, 1, 1, 1))
    assert [cache.get(n) is not None for n in range(4)] == [False, False, True, True]
    cache.put("big", PageImage(b"x" * 300, 1, 1, 1))
    assert cache.get("big") is None  # larger than the whole cache: never held
