"""Turn one file into LangChain Documents: pypdf for PDFs, unstructured for office and markup."""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from dataclasses import dataclass
from functools import cache
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

if TYPE_CHECKING:
    from unstructured_client import UnstructuredClient

PDF_SUFFIXES = {".pdf"}
PLAIN_TEXT_SUFFIXES = {".txt", ".text"}
# Text formats unstructured reads; we decode them ourselves so a GBK or cp1252 file never fails.
MARKUP_SUFFIXES = {".md", ".markdown", ".html", ".htm"}
TABLE_SUFFIXES = {".csv", ".tsv"}
# Formats unstructured reads from raw bytes (an email declares its own charsets).
BINARY_SUFFIXES = {".docx", ".pptx", ".eml"}
OFFICE_SUFFIXES = {".docx", ".pptx"}
SUPPORTED_SUFFIXES = frozenset(
    PDF_SUFFIXES | PLAIN_TEXT_SUFFIXES | MARKUP_SUFFIXES | TABLE_SUFFIXES | BINARY_SUFFIXES
)
# Slides and PDF pages are what a reader can turn to; other formats get no page number.
PAGED_SUFFIXES = {".pdf", ".pptx"}


class UnreadableFile(Exception):
    """A file that cannot be ingested; the message is the reason shown in the report."""


@dataclass(frozen=True)
class ParseLimits:
    max_file_bytes: int = 50 * 1024 * 1024
    max_unzipped_bytes: int = 500 * 1024 * 1024


def parse_file(path: Path, source: str, limits: ParseLimits = ParseLimits()) -> list[Document]:
    """One Document per page (PDF, slides) or per file; metadata: source, type, page."""
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
    if suffix in PDF_SUFFIXES:
        pages = _read_pdf(path)
    elif suffix in PLAIN_TEXT_SUFFIXES:
        pages = [(None, decode_text(path.read_bytes()))]
    elif suffix in TABLE_SUFFIXES:
        pages = [(None, _read_table(decode_text(path.read_bytes()), suffix))]
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

    documents = [
        Document(
            page_content=text.strip(),
            metadata={"source": source, "type": suffix.lstrip(".")}
            | ({"page": page} if page is not None and suffix in PAGED_SUFFIXES else {}),
        )
        for page, text in pages
        if text.strip()
    ]
    if not documents:
        raise UnreadableFile("no text found in the file")
    return documents


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
    """CSV/TSV as one line per row, each value labelled with its column header.

    A table flattened into one run of cells loses which value belongs to which column, and a
    chunk cut from the middle of it loses the header; "departure: 07:15 | to: Gullhaven Isle"
    keeps both in every chunk. Cells are joined with " | " because values often hold commas
    and semicolons. The first row is taken as the header, as it nearly always is in CSV.
    """
    first_line = text.lstrip("\ufeff").partition("\n")[0]
    # Excel in many locales writes ";"; pick whichever delimiter the header row uses most.
    delimiter = "\t" if suffix == ".tsv" else max(",;\t|", key=first_line.count)
    try:
        rows = [_clean_cells(row) for row in csv.reader(io.StringIO(text), delimiter=delimiter)]
    except csv.Error as exc:
        raise UnreadableFile(f"damaged {suffix} file ({exc})") from exc
    rows = [row for row in rows if any(row)]
    if len(rows) < 2:
        return _render_rows(rows)
    header, *body = rows
    return "\n".join(
        " | ".join(
            f"{label}: {value}" if label else value
            for label, value in zip_longest(header, row, fillvalue="")
            if value
        )
        for row in body
    )


def _render_rows(rows: list[list[str]]) -> str:
    """One line per table row, cells joined with " | "."""
    return "\n".join(" | ".join(cell for cell in row if cell) for row in rows if any(row))


def _clean_cells(cells: list[str]) -> list[str]:
    return [" ".join(cell.split()) for cell in cells]


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


def _read_pdf(path: Path) -> list[tuple[int | None, str]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableFile("encrypted PDF (needs a password)")
        pages: list[tuple[int | None, str]] = [
            (number, page.extract_text() or "") for number, page in enumerate(reader.pages, 1)
        ]
    except UnreadableFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise UnreadableFile(f"damaged PDF ({type(exc).__name__}: {exc})") from exc
    if not any(text.strip() for _, text in pages):
        raise UnreadableFile("PDF has no extractable text (scanned? OCR is not included)")
    return pages


def _partition(path: Path, suffix: str, data: bytes) -> list[tuple[int | None, str]]:
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
    return [(page, "\n\n".join(texts)) for page, texts in pages.items()]


@cache
def _unused_api_client() -> UnstructuredClient:
    """UnstructuredLoader builds an API client (and loads the CA bundle, ~0.1 s) per file
    unless given one; it is never used when partitioning locally, so build one per process."""
    from unstructured_client import UnstructuredClient

    return UnstructuredClient()


def _element_text(element: Document) -> str:
    """A table as one line per row: unstructured flattens it into one run of cells."""
    html = element.metadata.get("text_as_html")
    if element.metadata.get("category") != "Table" or not html:
        return element.page_content
    import lxml.html

    try:
        table = lxml.html.fromstring(html)
    except Exception:  # lxml raises several types on odd markup; the flat text still serves
        return element.page_content
    rows = [
        _clean_cells([c.text_content() for c in tr.xpath("./td|./th")]) for tr in table.iter("tr")
    ]
    return _render_rows(rows) or element.page_content


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
