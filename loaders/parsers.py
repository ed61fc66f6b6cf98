"""Turn one file into LangChain Documents: pypdf for PDFs, unstructured for office and markup."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from langchain_core.documents import Document

PDF_SUFFIXES = {".pdf"}
PLAIN_TEXT_SUFFIXES = {".txt", ".text"}
# Text formats unstructured reads; we decode them ourselves so a cp1252 file never fails.
MARKUP_SUFFIXES = {".md", ".markdown", ".html", ".htm", ".csv", ".tsv"}
# Formats unstructured reads from raw bytes (an email declares its own charsets).
BINARY_SUFFIXES = {".docx", ".pptx", ".eml"}
OFFICE_SUFFIXES = {".docx", ".pptx"}
SUPPORTED_SUFFIXES = frozenset(
    PDF_SUFFIXES | PLAIN_TEXT_SUFFIXES | MARKUP_SUFFIXES | BINARY_SUFFIXES
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
            f"{size / 2**20:.1f} MB is over the size limit of "
            f"{limits.max_file_bytes / 2**20:g} MB (MAX_FILE_MB)"
        )
    if suffix in OFFICE_SUFFIXES:
        _refuse_zip_bombs(path, suffix, limits)
    if suffix in PDF_SUFFIXES:
        pages = _read_pdf(path)
    elif suffix in PLAIN_TEXT_SUFFIXES:
        pages = [(None, decode_text(path.read_bytes()))]
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
    """UTF-8 (with or without BOM) or UTF-16 with BOM; else cp1252, else latin-1. Never fails
    on legacy encodings, but refuses binary data posing as text."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:8192]:
        raise UnreadableFile("binary data, not text (it holds NUL bytes)")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _refuse_zip_bombs(path: Path, suffix: str, limits: ParseLimits) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableFile(f"not a valid {suffix} file (damaged, or not a zip archive)") from exc
    if declared > limits.max_unzipped_bytes:
        raise UnreadableFile(
            f"declares {declared / 2**20:,.0f} MB uncompressed, over the "
            f"{limits.max_unzipped_bytes / 2**20:g} MB limit (a zip bomb?)"
        )


def _read_pdf(path: Path) -> list[tuple[int | None, str]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableFile("encrypted PDF (needs a password)")
        pages = [(number, page.extract_text() or "") for number, page in enumerate(reader.pages, 1)]
    except UnreadableFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise UnreadableFile(f"damaged PDF ({type(exc).__name__}: {exc})") from exc
    if not any(text.strip() for _, text in pages):
        raise UnreadableFile("PDF has no extractable text (scanned? OCR is not included)")
    return pages


def _partition(path: Path, suffix: str, data: bytes) -> list[tuple[int | None, str]]:
    """Partition with unstructured and join the elements of each page, in reading order."""
    from langchain_unstructured import UnstructuredLoader

    from loaders.spacy_model import use_packaged_spacy_model

    use_packaged_spacy_model()
    loader = UnstructuredLoader(
        file=io.BytesIO(data), metadata_filename=path.name, content_type=_CONTENT_TYPES[suffix]
    )
    try:
        elements = loader.load()
    except UnreadableFile:
        raise
    except Exception as exc:
        # unstructured raises many types for damaged input; the worker reports which.
        raise UnreadableFile(f"could not be parsed ({type(exc).__name__}: {exc})") from exc
    pages: dict[int | None, list[str]] = {}
    for element in elements:
        pages.setdefault(element.metadata.get("page_number"), []).append(element.page_content)
    return [(page, "\n\n".join(texts)) for page, texts in pages.items()]


_CONTENT_TYPES: dict[str, str] = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".csv": "text/csv",
    ".tsv": "text/tsv",
    ".eml": "message/rfc822",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
