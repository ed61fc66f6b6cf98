"""A cited page as a picture: a PDF page drawn by PDFium, or an image file scaled down, as PNG,
from the file on disk (`GET /api/passages/{chunk_id}/page.png`). On a PDF page whose text layer
holds the passage, the passage is marked as a highlighter would; a scan read by OCR has no text
layer to find it in, so its page is shown unmarked.

Size is bounded whatever the file holds: at most MAX_WIDTH pixels wide and MAX_PIXELS in all (a
page far taller than wide is drawn narrower than asked), one page at a time per process."""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable
from ctypes import byref, c_int
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.store.library import LibrarySource
from loaders.parsers import IMAGE_SUFFIXES, MULTI_FRAME_SUFFIXES, PDF_SUFFIXES

if TYPE_CHECKING:
    from PIL.Image import Image

MIN_WIDTH = 100
MAX_WIDTH = 1200  # pixels: the panel's width on a screen of two pixels per point, and more
DEFAULT_WIDTH = 1000
MAX_PIXELS = 4_000_000  # 12 MB of RGB
PAGED_PICTURES = frozenset(PDF_SUFFIXES | IMAGE_SUFFIXES)
# Non-space characters compared at each end of the passage to find it in the page's text layer.
ENDS = 40
MARK_COLOUR = (255, 221, 87)  # multiplied into the page: white turns yellow, ink stays ink
CACHE_BYTES = 32 * 2**20
# PDFium is not thread-safe; one drawing at a time also bounds the memory drawing takes.
_DRAWING = threading.Lock()


class PageUnavailable(Exception):
    """The page cannot be drawn; the message says why, in words."""


@dataclass(frozen=True)
class PageImage:
    png: bytes
    width: int
    height: int
    pages: int  # pages (PDF) or frames (TIFF) the file has
    mark_box: tuple[int, int, int, int] | None = None  # around the marked passage, in pixels

    @property
    def marked(self) -> bool:
        return self.mark_box is not None

    @property
    def size(self) -> int:
        return len(self.png)


def library_file(source: LibrarySource, name: str) -> Path | None:
    """The file on disk a stored name (`label/path inside the source`) names, found as the sync
    found it: no link inside the source is followed, nothing outside it is reached. None when
    no regular file is there now."""
    label, _, inside = name.partition("/")
    if label != source.label:
        return None
    path = source.location
    parts = inside.split("/") if inside else []
    if any(part in ("", ".", "..") for part in parts):
        return None
    try:
        for part in parts:
            path = path / part
            if path.is_symlink():
                return None
        return path if path.is_file() else None
    except OSError:
        return None


def render_page(path: Path, page: int, width: int, passage: str = "") -> PageImage:
    """Page `page` (1 = the first) of a PDF or image file as PNG, `width` pixels wide at most;
    `passage` (a PDF page's text) is marked where the text layer holds it."""
    width = max(MIN_WIDTH, min(width, MAX_WIDTH))
    suffix = path.suffix.lower()
    if suffix not in PDF_SUFFIXES | IMAGE_SUFFIXES:
        raise PageUnavailable("only PDF pages and images can be shown as a picture")
    with _DRAWING:  # drawing to encoding: one page in memory at a time, whatever many ask
        mark_box = None
        if suffix in PDF_SUFFIXES:
            image, pages, boxes = _pdf_page(path, page, width, passage)
            if boxes:
                image = _marked(image, boxes)
                mark_box = (
                    max(min(b[0] for b in boxes), 0),
                    max(min(b[1] for b in boxes), 0),
                    min(max(b[2] for b in boxes), image.width),
                    min(max(b[3] for b in boxes), image.height),
                )
        else:
            image, pages = _image_frame(path, suffix, page, width)
        buffer = io.BytesIO()
        # Level 3: on the sample report's pages, smaller than the default 6 (85-106 kB against
        # 90-114 kB), and level 9 took 4 times as long to save a few kB.
        image.save(buffer, format="PNG", compress_level=3)
    return PageImage(buffer.getvalue(), image.width, image.height, pages, mark_box)


def passage_span(page_text: str, passage: str) -> tuple[int, int] | None:
    """Where `passage` is in a page's text layer: the indices of its first and last characters,
    or None. Whitespace is left out on both sides (a text layer breaks lines where the parser
    put spaces); the passage is found by its first and last ENDS characters."""
    kept = [i for i, ch in enumerate(page_text) if not ch.isspace()]
    squeezed = "".join(page_text[i] for i in kept)
    wanted = "".join(passage.split())
    if not wanted:
        return None
    head, tail = wanted[:ENDS], wanted[-ENDS:]
    start = squeezed.find(head)
    if start < 0:
        return None
    end = squeezed.find(tail, start + len(wanted) - len(tail))
    # The tail must close the passage about where its length says, not somewhere further on.
    if end < 0 or end + len(tail) - start > len(wanted) + ENDS:
        return None
    return kept[start], kept[end + len(tail) - 1]


# --- Drawing -------------------------------------------------------------------------------


def _check_page(page: int, pages: int) -> None:
    if not 1 <= page <= pages:
        counted = f"{pages} page" + ("" if pages == 1 else "s")
        raise PageUnavailable(f"it has no page {page} (it has {counted})")


def _pdf_page(
    path: Path, page: int, width: int, passage: str
) -> tuple[Image, int, list[tuple[int, int, int, int]]]:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        raise PageUnavailable(f"PDFium cannot open it ({exc})") from exc
    try:
        pages = len(document)
        _check_page(page, pages)
        drawn = document[page - 1]
        points_wide, points_high = drawn.get_size()
        if points_wide <= 0 or points_high <= 0:
            raise PageUnavailable("the page has no size")
        scale = min(width / points_wide, math.sqrt(MAX_PIXELS / (points_wide * points_high)))
        # PDFium rounds each side up: a pixel more either way must not cross the bounds.
        while math.ceil(points_wide * scale) * math.ceil(points_high * scale) > MAX_PIXELS or (
            math.ceil(points_wide * scale) > width
        ):
            scale *= 0.999
        bitmap = drawn.render(scale=scale)
        image = bitmap.to_pil().copy()  # the bitmap's buffer is PDFium's, freed on close
        boxes = _passage_boxes(drawn, passage, image.size) if passage else []
    except pdfium.PdfiumError as exc:
        raise PageUnavailable(f"PDFium cannot draw it ({exc})") from exc
    finally:
        document.close()
    return image, pages, boxes


def _passage_boxes(
    page: Any, passage: str, size: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """The passage's lines on the drawn page, in pixels (left, top, right, bottom)."""
    import pypdfium2.raw as pdfium_c

    text_page = page.get_textpage()
    try:
        text = text_page.get_text_range()
        # A character outside the BMP is two UTF-16 units of text but one character index.
        span = passage_span(text, passage) if len(text) == text_page.count_chars() else None
        if span is None:
            return []
        first, last = span
        rects = [
            text_page.get_rect(i) for i in range(text_page.count_rects(first, last - first + 1))
        ]
    finally:
        text_page.close()

    def device(x: float, y: float) -> tuple[int, int]:
        # PDFium's own page-to-pixel mapping: crop box, rotation and origin included.
        dx, dy = c_int(), c_int()
        pdfium_c.FPDF_PageToDevice(page.raw, 0, 0, size[0], size[1], 0, x, y, byref(dx), byref(dy))
        return dx.value, dy.value

    boxes = []
    for left, bottom, right, top in rects:
        corners = [device(left - 1, bottom - 1), device(right + 1, top + 1)]
        xs, ys = sorted(c[0] for c in corners), sorted(c[1] for c in corners)
        boxes.append((xs[0], ys[0], xs[1], ys[1]))
    return boxes


def _marked(image: Image, boxes: list[tuple[int, int, int, int]]) -> Image:
    from PIL import Image as PILImage
    from PIL import ImageChops

    image = image.convert("RGB")
    for box in boxes:
        left, top = max(box[0], 0), max(box[1], 0)
        right, bottom = min(box[2], image.width), min(box[3], image.height)
        if right <= left or bottom <= top:
            continue
        region = image.crop((left, top, right, bottom))
        ink = PILImage.new("RGB", region.size, MARK_COLOUR)
        image.paste(ImageChops.multiply(region, ink), (left, top))
    return image


def _image_frame(path: Path, suffix: str, page: int, width: int) -> tuple[Image, int]:
    """Frame `page` of an image (only TIFFs have more than one), upright, scaled down to fit."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns about a decompression bomb from MAX_IMAGE_PIXELS and raises only from
            # twice that; the sync refused such files, so one here is a file swapped in since.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as opened:
                frames = getattr(opened, "n_frames", 1) if suffix in MULTI_FRAME_SUFFIXES else 1
                _check_page(page, frames)
                opened.seek(page - 1)
                limit = PILImage.MAX_IMAGE_PIXELS
                if limit and opened.width * opened.height > limit:
                    raise PageUnavailable("it has more pixels than an image may have here")
                high = MAX_PIXELS // width
                opened.draft("RGB", (width, high))  # a JPEG is decoded at the smaller size
                image = ImageOps.exif_transpose(opened)
                if image.mode not in ("L", "LA", "RGB", "RGBA"):
                    alpha = "A" in image.getbands() or "transparency" in image.info
                    image = image.convert("RGBA" if alpha else "RGB")
                image.thumbnail((width, high))
                return image, frames
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise PageUnavailable("it has more pixels than an image may have here") from exc
    except UnidentifiedImageError as exc:
        raise PageUnavailable("it is not a readable image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PageUnavailable(f"the image is damaged ({exc})") from exc


# --- Cache ---------------------------------------------------------------------------------


class RenderedPages:
    """The pages drawn last, up to `limit` bytes of PNG: opening one citation's passages one
    after another, or again, draws each page once. Keys hold the file's fingerprint, so a
    changed file is never answered from here."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.held: OrderedDict[Hashable, PageImage] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable) -> PageImage | None:
        with self.lock:
            found = self.held.get(key)
            if found is not None:
                self.held.move_to_end(key)
            return found

    def put(self, key: Hashable, image: PageImage) -> None:
        if image.size > self.limit:
            return
        with self.lock:
            self.held[key] = image
            self.held.move_to_end(key)
            while sum(i.size for i in self.held.values()) > self.limit:
                self.held.popitem(last=False)
