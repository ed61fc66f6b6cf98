"""OCR: the text of an image, in reading order, offline.

Engine: RapidOCR (`rapidocr` 3.10, PP-OCRv6 small detection and recognition models for Chinese
and English, 31 MB, inside the wheel), run by onnxruntime. Chosen by benchmarks/ocr_engines.py
on the OCR set of benchmarks/ocr_set.py (26 pages; results in
benchmarks/results/ocr-engines.json, table in docs/ocr-and-tables.md): character error rate
English 0.001 / Chinese 0.069, against 0.024 / 0.082 for rapidocr-onnxruntime 1.4.4
(PP-OCRv4) and 0.009 / 0.184 for Debian's tesseract 5.3 (chi_sim+eng). It is the slowest of
the three (0.14 pages/s on full A4 pages against 0.31 and 0.42), but the most accurate, comes
with `pip install` (tesseract's language data cannot), and adds 95 MB to the core install
(opencv-python-headless 64 MB of it) against 98 MB for rapidocr-onnxruntime, whose
opencv-python (not headless) cannot be swapped for the headless build by any dependency
specifier.

The engine is loaded once per process, on the first image, and never reaches the network: the
models come from the installed package (RapidOCR only downloads a model that is missing from
its package folder, and ours are all there).

Reading order: the engine returns one box per run of text. Boxes are grouped into lines by
vertical overlap (a box joins a line when the two overlap by at least half the smaller
height), lines are read top to bottom and the boxes of a line left to right. Pieces are joined
with a space, except between two Chinese (CJK) characters, which have none.

A PDF page is read by OCR when it has no usable text layer (`text_layer_usable`): no text; a
layer that is mostly garbage (over 30 % U+FFFD, private-use or control characters or "(cid:N)"
glyph ids); or under 1 character per square inch of page (97 on A4) on a page that images cover
by half or more. Measured by benchmarks/ocr_engines.py on every PDF page of the OCR set and of
data/ (non-space characters per square inch; image share of the page):

    text pages, full          14.4-18.9 (A4, 11 pt)   6.0-7.3 (data/docs report)    images 0
    text pages, sparse        1.8-2.5 (data/docs-zh report, short Chinese paragraphs)  0
    title page                0.44                                                   0
    caption under a photo     0.49                                                   0.33
    scan, no text layer       0                                                      1.00
    scan with a scanner stamp 0.28 ("Scanned with OfficeScan - page 1")              1.00

Density alone cannot tell the title page (0.44) from the stamped scan (0.28); the image under
a scan can. The rule decides all 14 pages right. When a layer with some text is read by OCR,
the OCR text replaces it only if it is longer (a slide title over a full-page picture keeps
its layer).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from PIL import Image

# One point of a box: (x, y) in pixels of the image given.
Point = Sequence[float]


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[float, float, float, float]  # left, top, right, bottom
    confidence: float


@dataclass(frozen=True)
class OcrPage:
    text: str  # lines joined with newlines, in reading order
    lines: list[OcrLine]
    confidence: float  # mean recognition score, weighted by characters; 0.0 for no text


# --- reading order ---------------------------------------------------------------------------

_CJK = re.compile(
    "[\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff00-\uffef]"
)


def join_pieces(pieces: Iterable[str]) -> str:
    """Join the runs of one line: no space between two CJK characters, one space otherwise."""
    text = ""
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        if text and not (_CJK.match(text[-1]) and _CJK.match(piece[0])):
            text += " "
        text += piece
    return text


def lines_from_boxes(results: Iterable[tuple[Sequence[Point], str, float]]) -> list[OcrLine]:
    """Group (box, text, score) runs into lines, top to bottom, each left to right."""
    runs = []
    for points, text, score in results:
        if not text.strip():
            continue
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
        runs.append(((min(xs), min(ys), max(xs), max(ys)), text, float(score)))
    runs.sort(key=lambda run: (run[0][1] + run[0][3]) / 2)
    groups: list[list[tuple[tuple[float, float, float, float], str, float]]] = []
    for run in runs:
        top, bottom = run[0][1], run[0][3]
        if groups:
            line = groups[-1]
            line_top = min(r[0][1] for r in line)
            line_bottom = max(r[0][3] for r in line)
            overlap = min(bottom, line_bottom) - max(top, line_top)
            smaller = min(bottom - top, line_bottom - line_top)
            if smaller > 0 and overlap >= smaller / 2:
                line.append(run)
                continue
        groups.append([run])
    lines = []
    for group in groups:
        group.sort(key=lambda r: r[0][0])
        text = join_pieces(r[1] for r in group)
        chars = sum(len(r[1]) for r in group)
        confidence = sum(r[2] * len(r[1]) for r in group) / chars if chars else 0.0
        box = (
            min(r[0][0] for r in group),
            min(r[0][1] for r in group),
            max(r[0][2] for r in group),
            max(r[0][3] for r in group),
        )
        lines.append(OcrLine(text, box, confidence))
    return lines


def page_from_lines(lines: list[OcrLine]) -> OcrPage:
    chars = sum(len(line.text) for line in lines)
    confidence = sum(line.confidence * len(line.text) for line in lines) / chars if chars else 0.0
    return OcrPage("\n".join(line.text for line in lines), lines, confidence)


# --- the engine ------------------------------------------------------------------------------

_LOCK = threading.Lock()


@cache
def _engine() -> Any:
    from rapidocr import RapidOCR

    # Quiet: RapidOCR logs every model it loads at INFO level. No direction classifier: it
    # turned long upright lines of a 300 dpi page upside down and garbled them (the OCR set's
    # en-300-clean page: CER 0.081 with it, 0.000 without); pages and photos come upright
    # (photos after their EXIF rotation).
    return RapidOCR(params={"Global.log_level": "error", "Global.use_cls": False})


def load_engine() -> None:
    """Load the models now (the first image would otherwise pay for it)."""
    _engine()


# RapidOCR scales every image down to 2,000 pixels on its longest side before it reads it
# (Global.max_side_len); doing so first, while decoding, keeps a 50-megapixel photo from taking
# hundreds of megabytes on its way there.
MAX_SIDE = 2000


def prepare(image: Image.Image) -> Image.Image:
    """An 8-bit RGB image the engine can read, upright as the camera saw it (EXIF), at most
    MAX_SIDE pixels on its longest side."""
    from PIL import ImageOps

    if image.format == "JPEG" and max(image.size) > 2 * MAX_SIDE:
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode at 1/2, 1/4 or 1/8 size directly
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        image = image.convert("I")  # 16-bit scans: resized as 32-bit, stretched below
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    if image.mode in ("I", "F"):
        # 16-bit and float scans: stretch to 8 bits (convert() would clip them to white).
        import numpy as np

        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else pixels * 0
        image = Image.fromarray(scaled.astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, as a viewer shows them (black text on transparent
        # would otherwise become black on black).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def ocr_image(image: Image.Image) -> OcrPage:
    """The text of one image (a page, a photo), in reading order."""
    import numpy as np

    pixels = np.asarray(prepare(image))
    with _LOCK:  # one engine per process; onnxruntime sessions are shared
        try:
            result = _engine()(pixels)
        except Exception as exc:
            # onnxruntime reports a failed allocation (PARSE_MEMORY_MB's address-space limit)
            # as a RuntimeException naming std::bad_alloc: make it the MemoryError it is.
            if "bad_alloc" in str(exc):
                raise MemoryError(f"OCR ran out of memory ({type(exc).__name__})") from exc
            raise
    if result.boxes is None or result.txts is None:
        return OcrPage("", [], 0.0)
    boxes = [[(float(x), float(y)) for x, y in box] for box in result.boxes]
    return page_from_lines(
        lines_from_boxes(zip(boxes, result.txts, result.scores or [], strict=True))
    )


# --- PDF pages: is the text layer usable? ----------------------------------------------------

# The rule and its measurement: see the module docstring.
MIN_CHARS_PER_SQUARE_INCH = 1.0
MIN_IMAGE_COVERAGE = 0.5
MAX_GARBAGE_FRACTION = 0.3

_GARBAGE = re.compile(r"\(cid:\d+\)|[\ufffd\ue000-\uf8ff\x00-\x08\x0b\x0e-\x1f]")


def garbage_fraction(text: str) -> float:
    """Share of a text layer's characters that are not text: U+FFFD, private-use code points,
    control characters and pdfminer-style "(cid:N)" glyph ids."""
    visible = "".join(text.split())
    if not visible:
        return 0.0
    bad = sum(len(m.group()) for m in _GARBAGE.finditer(visible))
    return bad / len(visible)


def might_need_ocr(text: str, page_square_inches: float) -> bool:
    """The cheap half of the rule (no rendering, no image lookup): a page whose text layer is
    dense and clean is kept without looking further."""
    visible = "".join(text.split())
    density = len(visible) / max(page_square_inches, 1.0)
    return density < MIN_CHARS_PER_SQUARE_INCH or garbage_fraction(text) > MAX_GARBAGE_FRACTION


def text_layer_usable(text: str, page_square_inches: float, image_coverage: float) -> bool:
    """Whether a PDF page's text layer is its text, or the page must be read by OCR.

    Not usable: no text at all; a layer that is mostly garbage (over 30 % of its characters
    U+FFFD, private-use or control characters, or "(cid:N)" glyph ids: a font without a
    Unicode map); or under 1 character per square inch (97 on an A4 page) on a page that
    images cover by half or more (a scan with a scanner's stamp or a page number as its only
    text). A sparse page without such an image (a title page, a short letter) keeps its text.
    The caller reads a page by OCR only when this says no, and keeps a non-garbage layer when
    OCR finds fewer characters than it has (a slide's title over a full-page picture)."""
    visible = "".join(text.split())
    if not visible:
        return False
    if garbage_fraction(text) > MAX_GARBAGE_FRACTION:
        return False
    density = len(visible) / max(page_square_inches, 1.0)
    return not (density < MIN_CHARS_PER_SQUARE_INCH and image_coverage >= MIN_IMAGE_COVERAGE)


def image_coverage(page: Any) -> float:
    """Share of a pypdfium2 page's area covered by images (clipped to the page; overlapping
    images counted on a coarse grid, so two stacked strips of a scan are not 200 %)."""
    import pypdfium2.raw as pdfium_c

    width, height = page.get_size()
    if width <= 0 or height <= 0:
        return 0.0
    cells = 32
    covered = [[False] * cells for _ in range(cells)]
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=4):
        left, bottom, right, top = obj.get_bounds()
        x0 = max(0, int(left / width * cells))
        x1 = min(cells, int(-(-right / width * cells // 1)))
        y0 = max(0, int(bottom / height * cells))
        y1 = min(cells, int(-(-top / height * cells // 1)))
        for y in range(y0, y1):
            for x in range(x0, x1):
                covered[y][x] = True
    return sum(map(sum, covered)) / cells**2
