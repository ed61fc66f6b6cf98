"""Tables as Markdown tables: rows under their header, whatever format they came from.

A table flattened into a run of cells loses which value belongs to which column. A Markdown
table keeps the header row above the rows it labels, a chat model reads it as a table, and
`split_markdown_table` cuts a long one into pieces that each start with the header again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any


def cell_text(value: Any) -> str:
    """One cell as text: whitespace runs as one space; whole floats without ".0"; dates in
    ISO form; None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="minutes" if value.second == 0 else "seconds")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return " ".join(str(value).split())


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(rows: Iterable[Sequence[Any]], header_rows: int = 1) -> str:
    """Rows as a Markdown table; the first row is the header (an empty one when
    `header_rows` is 0). Empty rows and columns that are empty in every row are dropped;
    short rows are padded."""
    table = [[cell_text(cell) for cell in row] for row in rows]
    table = [row for row in table if any(row)]
    if not table:
        return ""
    width = max(len(row) for row in table)
    table = [row + [""] * (width - len(row)) for row in table]
    keep = [c for c in range(width) if any(row[c] for row in table)]
    table = [[row[c] for c in keep] for row in table]
    if header_rows == 0:
        table.insert(0, [""] * len(keep))
    header, *body = table
    lines = [_row(header), "| " + " | ".join("---" for _ in header) + " |"]
    lines += [_row(row) for row in body]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_escape(cell) for cell in cells) + " |"


def html_table_rows(html: str) -> tuple[list[list[str]], int]:
    """The rows of an HTML table (unstructured's `text_as_html`) and how many of them are
    header rows (`<thead>` rows, or leading rows of `<th>` cells; 0 when none are marked)."""
    import lxml.html

    table = lxml.html.fromstring(html)
    rows: list[list[str]] = []
    header_rows = 0
    marked = True
    for tr in table.iter("tr"):
        cells: list[str] = []
        for cell in tr.xpath("./td|./th"):
            cells.append(cell_text(cell.text_content()))
            span = cell.get("colspan", "1")
            cells += [""] * (min(int(span), 50) - 1 if span.isdigit() else 0)
        in_head = any(parent.tag == "thead" for parent in tr.iterancestors())
        all_th = bool(tr.xpath("./th")) and not tr.xpath("./td")
        if marked and (in_head or all_th):
            header_rows += 1
        else:
            marked = False
        rows.append(cells)
    return rows, header_rows


def html_to_markdown_table(html: str) -> str:
    """An HTML table as a Markdown table. Its header is the first row: a table that marks
    no header row (unstructured marks none for DOCX and PPTX) nearly always has it first."""
    rows, header_rows = html_table_rows(html)
    if header_rows > 1:  # several header rows: one header, the cells of each column joined
        merged = [
            " ".join(dict.fromkeys(c for c in column if c))
            for column in zip(*_padded(rows[:header_rows]), strict=True)
        ]
        rows = [merged, *rows[header_rows:]]
    return markdown_table(rows)


def _padded(rows: list[list[str]]) -> list[list[str]]:
    width = max((len(row) for row in rows), default=0)
    return [row + [""] * (width - len(row)) for row in rows]


def is_markdown_table(text: str) -> bool:
    lines = text.strip().split("\n")
    return (
        len(lines) >= 2
        and lines[0].startswith("|")
        and lines[1].replace(" ", "").replace("|", "").replace("-", "").replace(":", "") == ""
        and "---" in lines[1]
    )


def split_markdown_table(
    table_text: str, max_chars: int, length: Callable[[str], int] = len
) -> list[str]:
    """Cut a Markdown table into pieces of at most `max_chars` (as `length` measures: the
    splitter's weighted characters, or an embedding model's tokens), where possible, each made
    of whole rows and starting with the header row and its separator line.

    A single row longer than the budget becomes a piece of its own (header included), never
    cut inside: half a row is worse than a long chunk. Text that is not a Markdown table is
    returned as one piece.
    """
    text = table_text.strip("\n")
    if length(text) <= max_chars or not is_markdown_table(text):
        return [text]
    lines = text.split("\n")
    head = "\n".join(lines[:2])
    pieces: list[str] = []
    current: list[str] = []
    size = length(head)
    for row in lines[2:]:
        if current and size + 1 + length(row) > max_chars:
            pieces.append("\n".join([head, *current]))
            current, size = [], length(head)
        current.append(row)
        size += 1 + length(row)
    if current:
        pieces.append("\n".join([head, *current]))
    return pieces


def table_segments(
    text: str, max_chars: int, length: Callable[[str], int] = len
) -> list[tuple[str, bool]]:
    """`text` cut into runs of prose and Markdown tables, in order, as (text, is_table): a table
    longer than `max_chars` comes as several pieces, each with its header (split_markdown_table).
    A splitter chunks the prose as usual and keeps each table piece whole."""
    segments: list[tuple[str, bool]] = []
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        end = i
        while end < len(lines) and lines[end].lstrip().startswith("|"):
            end += 1
        block = "\n".join(lines[i:end])
        if end - i >= 2 and is_markdown_table(block):
            if any(p.strip() for p in prose):
                segments.append(("\n".join(prose).strip("\n"), False))
            prose = []
            segments += [(piece, True) for piece in split_markdown_table(block, max_chars, length)]
            i = end
        else:
            prose.append(lines[i])
            i += 1
    if any(p.strip() for p in prose):
        segments.append(("\n".join(prose).strip("\n"), False))
    return segments
