"""Turn one file into LangChain Documents: pypdf for PDFs (OCR for pages without a usable text
layer), OCR for images, python-calamine for spreadsheets, unstructured for office and markup.
Tables reach the Documents as Markdown tables."""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from dataclasses import dataclass
from functools import cache
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from loaders import activity
from loaders.tables import html_to_markdown_table, markdown_table

if TYPE_CHECKING:
    from unstructured_client import UnstructuredClient

PDF_SUFFIXES = {".pdf"}
PLAIN_TEXT_SUFFIXES = {".txt", ".text"}
# Text formats unstructured reads; we decode them ourselves so a GBK or cp1252 file never fails.
MARKUP_SUFFIXES = {".md", ".markdown", ".html", ".htm"}
TABLE_SUFFIXES = {".csv", ".tsv"}
SPREADSHEET_SUFFIXES = {".xlsx", ".ods"}
# Read by OCR. TIFF files may hold several pages (frames); the others are read as one page.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
MULTI_FRAME_SUFFIXES = {".tif", ".tiff"}
# Formats unstructured reads from raw bytes (an email declares its own charsets).
BINARY_SUFFIXES = {".docx", ".pptx", ".eml"}
# Zip containers: their declared unpacked size is checked before anything reads them.
OFFICE_SUFFIXES = {".docx", ".pptx", ".xlsx", ".ods"}
SUPPORTED_SUFFIXES = frozenset(
    PDF_SUFFIXES
    | PLAIN_TEXT_SUFFIXES
    | MARKUP_SUFFIXES
    | TABLE_SUFFIXES
    | BINARY_SUFFIXES
    | SPREADSHEET_SUFFIXES
    | IMAGE_SUFFIXES
)
# What a reader can turn to gets a page number: PDF pages, slides, sheets (1 = the first
# sheet) and image frames (1 for a single image); other formats get none.
PAGED_SUFFIXES = {".pdf", ".pptx"} | SPREADSHEET_SUFFIXES | IMAGE_SUFFIXES


class UnreadableFile(Exception):
    """A file that cannot be ingested; the message is the reason shown in the report."""


@dataclass(frozen=True)
class ParseLimits:
    max_file_bytes: int = 50 * 1024 * 1024
    max_unzipped_bytes: int = 500 * 1024 * 1024
    # Pillow's own default (Image.MAX_IMAGE_PIXELS): a larger image is refused before it is
    # decoded, as a decompression bomb.
    max_image_pixels: int = 89_478_485


@dataclass(frozen=True)
class Page:
    number: int | None
    text: str
    ocr: bool = False
    extra: dict[str, Any] | None = None  # more metadata for this page's Document


class FileDocuments(list[Document]):
    """What parse_file returns: the file's Documents (a list), and for the file's report how
    many pages it has (None for formats without pages) and how many of them were read by OCR
    (also those where OCR found no text, which have no Document). Pickles with its counts, so
    it crosses from a worker process intact."""

    pages: int | None = None
    ocr_pages: int = 0


def parse_file(path: Path, source: str, limits: ParseLimits = ParseLimits()) -> FileDocuments:
    """One Document per page (PDF, slides, sheets, image frames) or per file; metadata: source,
    type, page, and `ocr: True` on a page whose text came from OCR (`sheet` on a sheet)."""
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if size == 0:
        raise UnreadableFile("empty file")
    if size > limits.max_file_bytes:
        raise UnreadableFile(
            f"{_megabytes(size)} is over the size limit of "
            f"{_megabytes(limits.max_file_bytes)} (MAX_FILE_MB)"
        )
    if suffix in OFFICE_SUFFIXES:
        _refuse_zip_bombs(path, suffix, limits)
    pages: list[Page]
    if suffix in PDF_SUFFIXES:
        pages = _read_pdf(path)
    elif suffix in IMAGE_SUFFIXES:
        pages = _read_image(path, suffix, limits)
    elif suffix in SPREADSHEET_SUFFIXES:
        pages = _read_spreadsheet(path, suffix)
    elif suffix in PLAIN_TEXT_SUFFIXES:
        pages = [Page(None, decode_text(path.read_bytes()))]
    elif suffix in TABLE_SUFFIXES:
        pages = [Page(None, _read_table(decode_text(path.read_bytes()), suffix))]
    elif suffix in MARKUP_SUFFIXES:
        data = decode_text(path.read_bytes()).encode("utf-8")
        pages = _partition(path, suffix, data)
    elif suffix in BINARY_SUFFIXES:
        data = path.read_bytes()
        if suffix == ".eml" and b"\x00" in data[:8192]:
            raise UnreadableFile("binary data, not an email (it holds NUL bytes)")
        pages = _partition(path, suffix, data)
    else:
        raise UnreadableFile(f"unsupported file type ({suffix or 'no extension'})")

    documents = FileDocuments(
        Document(
            page_content=page.text.strip(),
            metadata={"source": source, "type": suffix.lstrip(".")}
            | (
                {"page": page.number}
                if page.number is not None and suffix in PAGED_SUFFIXES
                else {}
            )
            | ({"ocr": True} if page.ocr else {})
            | (page.extra or {}),
        )
        for page in pages
        if page.text.strip()
    )
    documents.ocr_pages = sum(page.ocr for page in pages)
    if suffix in PAGED_SUFFIXES:
        documents.pages = len(pages)
    if not documents:
        if documents.ocr_pages:
            raise UnreadableFile(
                f"no text found by OCR ({_count(documents.ocr_pages, 'page')} read)"
            )
        raise UnreadableFile("no text found in the file")
    return documents


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with BOM; else the encoding charset-normalizer
    detects (GBK, Big5, Shift-JIS, EUC-KR, cp1251...); else cp1252, else latin-1. Never fails on
    legacy encodings, but refuses binary data posing as text."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise UnreadableFile(f"damaged UTF-16 text ({exc.reason})") from exc
    if b"\x00" in data:
        raise UnreadableFile("binary data, not text (it holds NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _decode_legacy(data)
    # Binary data without NUL bytes decodes as cp1252/latin-1 too; text has few control codes.
    sample = text[:8192]
    if len(_CONTROL_CHARACTERS.findall(sample)) > max(1, len(sample) // 10):
        raise UnreadableFile("binary data, not text (it is full of control characters)")
    return text


# When charset-normalizer finds several encodings equally plausible (short texts: "停水通告"
# reads as GBK and as Korean cp949 alike), the one people most likely saved in wins: the
# Western Windows default first, then Chinese (simplified, traditional), Japanese, Korean.
_PREFERRED_ENCODINGS = ["cp1252", "gb18030", "big5", "cp932", "euc_jis_2004", "cp949"]
# Multi-byte encodings are trusted on their byte structure alone. A single-byte code page is
# trusted when charset-normalizer recognised a language in the text, or when the bytes are valid
# cp1252 and it found that reading messier (Thai in cp874); otherwise latin-1, which reads every
# byte: a few accented letters that are not even valid cp1252 fit a dozen DOS code pages alike.
_MULTI_BYTE = frozenset(
    [
        "gb18030",
        "gb2312",
        "gbk",
        "hz",
        "big5",
        "big5hkscs",
        "cp950",
        "cp932",
        "shift_jis",
        "shift_jis_2004",
        "shift_jisx0213",
        "euc_jp",
        "euc_jis_2004",
        "euc_jisx0213",
        "cp949",
        "euc_kr",
        "johab",
        "iso2022_jp",
        "iso2022_kr",
    ]
)


def _decode_legacy(data: bytes) -> str:
    from charset_normalizer import from_bytes

    matches = [m for m in from_bytes(data) if not m.encoding.startswith("utf_16")]
    if matches:
        least = min(m.chaos for m in matches)
        tied = [m for m in matches if m.chaos == least]
        best = min(
            tied,
            key=lambda m: (
                _PREFERRED_ENCODINGS.index(m.encoding)
                if m.encoding in _PREFERRED_ENCODINGS
                else len(_PREFERRED_ENCODINGS),
                -m.coherence,
            ),
        )
        valid_cp1252 = _decodes(data, "cp1252")
        if best.encoding in _MULTI_BYTE or best.coherence > 0 or valid_cp1252:
            try:
                return data.decode(best.encoding)
            except (UnicodeDecodeError, LookupError):
                pass  # the detector only sampled a large file; fall back below
    return data.decode("cp1252") if _decodes(data, "cp1252") else data.decode("latin-1")


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


# C0 and C1 control codes, except tab, newline, carriage return and form feed.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def _read_table(text: str, suffix: str) -> str:
    """CSV/TSV as a Markdown table, the first row as its header (as it nearly always is in
    CSV). A chunk cut from the middle of a long table repeats the header (see
    loaders.tables.split_markdown_table), so every value keeps its column's name."""
    first_line = text.lstrip("\ufeff").partition("\n")[0]
    # Excel in many locales writes ";"; pick whichever delimiter the header row uses most.
    delimiter = "\t" if suffix == ".tsv" else max(",;\t|", key=first_line.count)
    try:
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter))
    except csv.Error as exc:
        raise UnreadableFile(f"damaged {suffix} file ({exc})") from exc
    return markdown_table(rows)


def _read_spreadsheet(path: Path, suffix: str) -> list[Page]:
    """One page per sheet (page 1 = the first sheet), its cells as a Markdown table under the
    sheet's first row; the sheet's name in the metadata (`sheet`). Values as computed when the
    file was last saved (formulas are not evaluated)."""
    from python_calamine import CalamineError, CalamineWorkbook, PasswordError

    kind = suffix.lstrip(".").upper()
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        pages = []
        for number, name in enumerate(workbook.sheet_names, 1):
            rows = workbook.get_sheet_by_name(name).to_python(skip_empty_area=True)
            pages.append(Page(number, markdown_table(rows), extra={"sheet": name}))
    except PasswordError as exc:
        raise UnreadableFile(f"encrypted {kind} file (needs a password)") from exc
    except (CalamineError, ValueError, OSError) as exc:
        raise UnreadableFile(f"damaged {kind} file ({type(exc).__name__}: {exc})") from exc
    return pages


def _read_image(path: Path, suffix: str, limits: ParseLimits) -> list[Page]:
    """An image's text by OCR: each frame of a TIFF is a page, other images are one page."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from loaders.ocr import ocr_image

    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    pages = []
    try:
        with warnings.catch_warnings():
            # Pillow warns from MAX_IMAGE_PIXELS up and raises only from twice that.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                frames = getattr(image, "n_frames", 1) if suffix in MULTI_FRAME_SUFFIXES else 1
                for number in range(1, frames + 1):
                    image.seek(number - 1)
                    _refuse_bomb(image.size, limits)
                    image.load()
                    activity.ocr_page(number, frames)
                    pages.append(Page(number, ocr_image(image).text, ocr=True))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableFile(_bomb_reason(exc, limits)) from exc
    except UnidentifiedImageError as exc:
        raise UnreadableFile(
            f"not a readable {suffix.lstrip('.').upper()} image (damaged, or another format)"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and damaged image data as OSError (and a few as the others).
        raise UnreadableFile(f"damaged image ({exc})") from exc
    return pages


def _refuse_bomb(size: tuple[int, int], limits: ParseLimits) -> None:
    """Each frame of a multi-page TIFF has its own size; Pillow checks only the first."""
    if size[0] * size[1] > limits.max_image_pixels:
        raise UnreadableFile(_bomb_reason(None, limits, size))


def _bomb_reason(
    exc: Exception | None, limits: ParseLimits, size: tuple[int, int] | None = None
) -> str:
    found = re.search(r"\((\d+) pixels\)", str(exc)) if exc else None
    pixels = size[0] * size[1] if size else int(found.group(1)) if found else 0
    megapixels = f"{pixels / 1e6:,.0f} megapixels" if pixels else "too many pixels"
    return (
        f"image is {megapixels}, over the limit of {limits.max_image_pixels / 1e6:,.0f} "
        "megapixels (a decompression bomb?)"
    )


def _refuse_zip_bombs(path: Path, suffix: str, limits: ParseLimits) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableFile(f"not a valid {suffix} file (damaged, or not a zip archive)") from exc
    if declared > limits.max_unzipped_bytes:
        raise UnreadableFile(
            f"declares {_megabytes(declared)} uncompressed, over the "
            f"{_megabytes(limits.max_unzipped_bytes)} limit of MAX_UNZIPPED_MB (a zip bomb?)"
        )


def _megabytes(size: int) -> str:
    # Three significant digits: "0.148 MB", "52.4 MB"; whole megabytes from 100 MB up.
    megabytes = size / 2**20
    return f"{megabytes:,.0f} MB" if megabytes >= 100 else f"{megabytes:.3g} MB"


def _read_pdf(path: Path) -> list[Page]:
    """Each page's text layer; a page without a usable one (see
    loaders.ocr.text_layer_usable) is rendered and read by OCR."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableFile("encrypted PDF (needs a password)")
        pages = []
        for number, page in enumerate(reader.pages, 1):
            box = page.mediabox
            square_inches = abs(float(box.width) * float(box.height)) / 72**2
            pages.append((number, page.extract_text() or "", square_inches))
    except UnreadableFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise UnreadableFile(f"damaged PDF ({type(exc).__name__}: {exc})") from exc
    result = _ocr_pdf_pages(path, pages)
    ruled = _pages_with_ruling(path, [page.number for page in result if not page.ocr])
    if ruled:
        tables = _pdf_tables(path, ruled)
        result = [
            Page(page.number, tables[page.number]) if page.number in tables else page
            for page in result
        ]
    return result


# A page drawn with fewer line or rectangle objects has no ruled table.
_MIN_RULING_PATHS = 4


def _pages_with_ruling(path: Path, numbers: list[int | None]) -> list[int]:
    """Pages that draw lines or boxes, where a ruled table may be (PDFium counts them fast)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    found = []
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError:
        return []  # pypdf read it; the tables are a bonus
    try:
        for number in numbers:
            if number is None:
                continue
            paths = document[number - 1].get_objects(
                filter=(pdfium_c.FPDF_PAGEOBJ_PATH,), max_depth=3
            )
            if len(list(islice(paths, _MIN_RULING_PATHS))) == _MIN_RULING_PATHS:
                found.append(number)
    finally:
        document.close()
    return found


def _pdf_tables(path: Path, numbers: list[int]) -> dict[int, str]:
    """The text of pages with ruled tables, each table as a Markdown table where it stands.

    pypdf gives a table as a run of cells; pdfplumber finds tables drawn with lines (not
    tables laid out with spaces alone) and their cells. A page where it finds none keeps
    pypdf's text."""
    import pdfplumber

    texts: dict[int, str] = {}
    try:
        with pdfplumber.open(path) as pdf:
            for number in numbers:
                page = pdf.pages[number - 1]
                tables = [
                    t for t in page.find_tables() if len(t.rows) >= 2 and len(t.rows[0].cells) >= 2
                ]
                if not tables:
                    continue
                rest = page
                for table in tables:
                    rest = rest.outside_bbox(table.bbox, strict=False)
                parts = [(line["top"], line["text"]) for line in rest.extract_text_lines()]
                parts += [(t.bbox[1], markdown_table(t.extract())) for t in tables]
                parts.sort(key=lambda part: part[0])
                texts[number] = "\n".join(text for _, text in parts if text)
    except (MemoryError, UnreadableFile):
        raise
    except Exception:  # pdfminer raises many types on odd files; pypdf's text still serves
        return {}
    return texts


# Scanned pages are rendered at this resolution for OCR: RapidOCR scales pages down to 2,000
# pixels on their longest side before it reads them (an A4 page at 170 dpi), so more would only
# cost rendering time. A page larger than A4 is rendered to at most _MAX_RENDER_PIXELS pixels.
_RENDER_DPI = 200
_MAX_RENDER_PIXELS = 20_000_000


def _ocr_pdf_pages(path: Path, pages: list[tuple[int, str, float]]) -> list[Page]:
    from loaders.ocr import (
        MAX_GARBAGE_FRACTION,
        garbage_fraction,
        might_need_ocr,
        text_layer_usable,
    )

    if not any(might_need_ocr(text, area) for _, text, area in pages):
        return [Page(number, text) for number, text, _ in pages]
    import pypdfium2 as pdfium

    from loaders.ocr import image_coverage, ocr_image

    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        raise UnreadableFile(f"damaged PDF (PDFium: {exc})") from exc
    result = []
    try:
        for number, text, area in pages:
            if not might_need_ocr(text, area):
                result.append(Page(number, text))
                continue
            page = document[number - 1]
            if text_layer_usable(text, area, image_coverage(page)):
                result.append(Page(number, text))
                continue
            width, height = page.get_size()
            scale = min(_RENDER_DPI / 72, (_MAX_RENDER_PIXELS / max(width * height, 1)) ** 0.5)
            activity.ocr_page(number, len(pages))
            image = page.render(scale=scale, grayscale=True).to_pil()
            read = ocr_image(image).text
            # A layer of a few words (a scanner's stamp) is kept if OCR finds even less.
            garbage = garbage_fraction(text) > MAX_GARBAGE_FRACTION
            keep_layer = not garbage and len(text.strip()) >= len(read)
            result.append(Page(number, text) if keep_layer else Page(number, read, ocr=True))
    except pdfium.PdfiumError as exc:
        raise UnreadableFile(f"damaged PDF (PDFium: {exc})") from exc
    finally:
        document.close()
    return result


def _partition(path: Path, suffix: str, data: bytes) -> list[Page]:
    """Partition with unstructured and join the elements of each page, in reading order."""
    # unstructured sends a usage ping to its vendor when imported and on every partition
    # unless opted out; this app promises to stay on the machine. Set before the import.
    os.environ["SCARF_NO_ANALYTICS"] = os.environ["DO_NOT_TRACK"] = "1"
    from langchain_unstructured import UnstructuredLoader

    from loaders.spacy_model import use_packaged_spacy_model

    use_packaged_spacy_model()
    loader = UnstructuredLoader(
        file=io.BytesIO(data),
        metadata_filename=path.name,
        content_type=_CONTENT_TYPES[suffix],
        client=_unused_api_client(),
    )
    try:
        elements = loader.load()
    except (UnreadableFile, MemoryError):
        raise  # a MemoryError is PARSE_MEMORY_MB's to report, not a damaged file
    except Exception as exc:
        # unstructured raises many types for damaged input; the worker reports which.
        raise UnreadableFile(f"could not be parsed ({type(exc).__name__}: {exc})") from exc
    pages: dict[int | None, list[str]] = {}
    for element in elements:
        pages.setdefault(element.metadata.get("page_number"), []).append(_element_text(element))
    if suffix == ".eml" and elements:
        # The body alone loses who wrote, to whom and about what: put the headers first.
        pages.setdefault(None, []).insert(0, _email_headers(elements[0].metadata))
    return [Page(page, "\n\n".join(texts)) for page, texts in pages.items()]


@cache
def _unused_api_client() -> UnstructuredClient:
    """UnstructuredLoader builds an API client (and loads the CA bundle, ~0.1 s) per file
    unless given one; it is never used when partitioning locally, so build one per process."""
    from unstructured_client import UnstructuredClient

    return UnstructuredClient()


def _element_text(element: Document) -> str:
    """A table as a Markdown table: unstructured flattens it into one run of cells."""
    html = element.metadata.get("text_as_html")
    if element.metadata.get("category") != "Table" or not html:
        return element.page_content
    try:
        table = html_to_markdown_table(html)
    except Exception:  # lxml raises several types on odd markup; the flat text still serves
        return element.page_content
    return table or element.page_content


def _email_headers(metadata: dict[str, Any]) -> str:
    fields = {
        "Subject": metadata.get("subject"),
        "From": ", ".join(metadata.get("sent_from") or []),
        "To": ", ".join(metadata.get("sent_to") or []),
        "Date": metadata.get("last_modified"),
    }
    return "\n".join(f"{name}: {value}" for name, value in fields.items() if value)


_CONTENT_TYPES: dict[str, str] = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".eml": "message/rfc822",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
