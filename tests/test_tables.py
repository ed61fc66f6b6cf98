"""Tables reach the Documents as Markdown tables, header first, from every format that has them;
a long one split over chunks repeats its header."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from app.paths import SAMPLE_DOCS_DIR
from loaders.parsers import UnreadableFile, parse_file
from loaders.tables import (
    html_to_markdown_table,
    markdown_table,
    split_markdown_table,
    table_segments,
)

pytestmark = pytest.mark.unit

HEADER = ["Vessel", "Seats", "Built"]
ROWS = [["Saltwren", "88", "1998"], ["Kittiwake Dawn", "120", "2019"]]
TABLE = (
    "| Vessel | Seats | Built |\n"
    "| --- | --- | --- |\n"
    "| Saltwren | 88 | 1998 |\n"
    "| Kittiwake Dawn | 120 | 2019 |"
)


# --- the pure functions ----------------------------------------------------------------------


def test_markdown_table_has_the_header_first_and_escapes_pipes() -> None:
    assert markdown_table([HEADER, *ROWS]) == TABLE
    table = markdown_table([["a", "b", ""], ["x|y", None, ""], [], [2.0, 2.5]])
    assert table.split("\n") == ["| a | b |", "| --- | --- |", "| x\\|y |  |", "| 2 | 2.5 |"]


def test_html_table_becomes_a_markdown_table_with_its_header_row() -> None:
    html = (
        "<table><thead><tr><th>Vessel</th><th>Seats</th><th>Built</th></tr></thead>"
        "<tbody><tr><td>Saltwren</td><td>88</td><td>1998</td></tr>"
        "<tr><td>Kittiwake  Dawn</td><td>120</td><td>2019</td></tr></tbody></table>"
    )
    assert html_to_markdown_table(html) == TABLE
    # No marked header (as unstructured writes DOCX and PPTX tables): the first row is it.
    plain = html.replace("<thead>", "").replace("</thead>", "").replace("th>", "td>")
    assert html_to_markdown_table(plain) == TABLE
    spanned = "<table><tr><th colspan='2'>Route</th></tr><tr><td>A</td><td>B</td></tr></table>"
    assert html_to_markdown_table(spanned).split("\n")[0] == "| Route |  |"


def test_a_split_table_repeats_its_header_in_every_piece() -> None:
    rows = [
        [f"sailing {n}", f"{6 + n // 4:02d}:{15 * (n % 4):02d}", "Gullhaven"] for n in range(40)
    ]
    table = markdown_table([["Sailing", "Departs", "To"], *rows])
    pieces = split_markdown_table(table, 200)
    assert len(pieces) > 5
    head = "| Sailing | Departs | To |\n| --- | --- | --- |\n"
    body_rows = []
    for piece in pieces:
        assert piece.startswith(head)
        assert len(piece) <= 200
        body_rows += piece[len(head) :].split("\n")
    assert body_rows == table.split("\n")[2:]  # every row once, in order, none cut


def test_split_leaves_short_tables_long_rows_and_other_text_whole() -> None:
    assert split_markdown_table(TABLE, 1000) == [TABLE]
    long_row = markdown_table([["a", "b"], ["x" * 300, "y"], ["z", "w"]])
    pieces = split_markdown_table(long_row, 100)
    assert pieces[0] == "| a | b |\n| --- | --- |\n| " + "x" * 300 + " | y |"
    assert pieces[1] == "| a | b |\n| --- | --- |\n| z | w |"
    text = "Not a table.\n" * 50
    assert split_markdown_table(text, 100) == [text.strip("\n")]


def test_table_segments_cut_prose_from_tables_in_order() -> None:
    rows = [["Saltwren", str(n), "1998"] for n in range(30)]
    table = markdown_table([HEADER, *rows])
    text = f"The fleet:\n\n{table}\n\nBoth passed their survey.\n{TABLE}"
    segments = table_segments(text, 150)
    assert segments[0] == ("The fleet:", False)
    pieces = [s for s, is_table in segments[1:-2] if is_table]
    assert len(pieces) == len(segments) - 3 > 2
    assert all(p.startswith("| Vessel | Seats | Built |\n| --- |") for p in pieces)
    assert segments[-2:] == [("Both passed their survey.", False), (TABLE, True)]
    # Wide characters weigh more in the splitter: a length function says how much.
    assert len(table_segments(TABLE, 100, length=lambda t: 3 * len(t))) == 2
    assert table_segments("No table | here.\nJust text.", 10) == [
        ("No table | here.\nJust text.", False)
    ]


# --- each format ---------------------------------------------------------------------------------


def test_csv_and_tsv_become_markdown_tables(tmp_path: Path) -> None:
    documents = parse_file(SAMPLE_DOCS_DIR / "ferry" / "timetable.csv", "timetable.csv")
    lines = documents[0].page_content.splitlines()
    assert lines[0] == "| departure | from | to | vessel | days | crossing_minutes | notes |"
    assert lines[1] == "| --- | --- | --- | --- | --- | --- | --- |"
    assert lines[2] == (
        "| 07:15 | Brindlemoor Quay | Gullhaven Isle | Saltwren | Mon-Sat | 22 | "
        "First sailing; bicycles carried free |"
    )
    assert lines[3].endswith("| 22 |  |")  # an empty cell stays in its column
    assert len(lines) == 16

    semicolons = tmp_path / "prices.csv"
    semicolons.write_bytes("Produit;Prix\nCafé;2,50 €\n".encode("cp1252"))
    assert parse_file(semicolons, "prices.csv")[0].page_content == (
        "| Produit | Prix |\n| --- | --- |\n| Café | 2,50 € |"
    )
    tsv = tmp_path / "fleet.tsv"
    tsv.write_text("\n".join("\t".join(row) for row in [HEADER, *ROWS]) + "\n")
    assert parse_file(tsv, "fleet.tsv")[0].page_content == TABLE


def test_xlsx_sheets_are_pages_with_their_names(tmp_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    fleet = workbook.active
    assert fleet is not None
    fleet.title = "Fleet"
    for row in [HEADER, *ROWS]:
        fleet.append([int(c) if c.isdigit() else c for c in row])
    workbook.create_sheet("Empty")
    fares = workbook.create_sheet("Fares")
    fares.append(["Ticket", "Price"])
    fares.append(["Adult return", 6.5])
    path = tmp_path / "fleet.xlsx"
    workbook.save(path)

    documents = parse_file(path, "fleet.xlsx")
    assert [(d.metadata["page"], d.metadata["sheet"]) for d in documents] == [
        (1, "Fleet"),
        (3, "Fares"),
    ]
    assert documents[0].page_content == TABLE
    assert documents[1].page_content == "| Ticket | Price |\n| --- | --- |\n| Adult return | 6.5 |"
    assert documents.pages == 3
    assert documents[0].metadata["type"] == "xlsx"
    assert "ocr" not in documents[0].metadata


def _write_ods(path: Path, sheets: dict[str, list[list[str]]]) -> None:
    """A minimal OpenDocument spreadsheet, as LibreOffice reads it."""
    tables = ""
    for name, rows in sheets.items():
        cells = "".join(
            "<table:table-row>"
            + "".join(
                f'<table:table-cell office:value-type="string"><text:p>{c}</text:p>'
                "</table:table-cell>"
                for c in row
            )
            + "</table:table-row>"
            for row in rows
        )
        tables += f'<table:table table:name="{name}">{cells}</table:table>'
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        f"<office:body><office:spreadsheet>{tables}</office:spreadsheet></office:body>"
        "</office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet"
        )
        archive.writestr("content.xml", content)
        archive.writestr("META-INF/manifest.xml", manifest)


def test_ods_sheets_are_pages_with_their_names(tmp_path: Path) -> None:
    path = tmp_path / "班车.ods"
    _write_ods(path, {"车辆": [["车名", "座位"], ["岚溪一号", "40"]], "Fleet": [HEADER, *ROWS]})
    documents = parse_file(path, "班车.ods")
    assert [(d.metadata["page"], d.metadata["sheet"]) for d in documents] == [
        (1, "车辆"),
        (2, "Fleet"),
    ]
    assert documents[0].page_content == "| 车名 | 座位 |\n| --- | --- |\n| 岚溪一号 | 40 |"
    assert documents[1].page_content == TABLE


def test_a_damaged_spreadsheet_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a workbook")
    with pytest.raises(UnreadableFile, match="damaged XLSX file"):
        parse_file(path, "broken.xlsx")


def test_docx_table_reaches_the_document_as_a_markdown_table(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("The cooperative's fleet at the end of 2024:")
    table = document.add_table(rows=0, cols=3)
    for row in [HEADER, *ROWS]:
        cells = table.add_row().cells
        for cell, value in zip(cells, row, strict=True):
            cell.text = value
    document.add_paragraph("Both vessels passed their survey in March.")
    path = tmp_path / "fleet.docx"
    document.save(str(path))

    text = parse_file(path, "fleet.docx")[0].page_content
    assert TABLE in text
    assert text.index("fleet at the end") < text.index(TABLE) < text.index("survey in March")


def test_pptx_table_reaches_the_document_as_a_markdown_table(tmp_path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])
    assert slide.shapes.title is not None
    slide.shapes.title.text = "Our fleet"
    shape = slide.shapes.add_table(3, 3, Inches(1), Inches(2), Inches(6), Inches(2))
    for r, row in enumerate([HEADER, *ROWS]):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    path = tmp_path / "fleet.pptx"
    presentation.save(str(path))

    documents = parse_file(path, "fleet.pptx")
    assert documents[0].metadata["page"] == 1
    assert TABLE in documents[0].page_content


def test_html_table_reaches_the_document_as_a_markdown_table(tmp_path: Path) -> None:
    path = tmp_path / "fleet.html"
    path.write_text(
        "<html><body><h1>Fleet</h1><p>Our vessels:</p><table>"
        "<tr><th>Vessel</th><th>Seats</th><th>Built</th></tr>"
        "<tr><td>Saltwren</td><td>88</td><td>1998</td></tr>"
        "<tr><td>Kittiwake Dawn</td><td>120</td><td>2019</td></tr>"
        "</table></body></html>",
        encoding="utf-8",
    )
    assert TABLE in parse_file(path, "fleet.html")[0].page_content


def test_sample_docx_table_keeps_its_rows() -> None:
    text = parse_file(SAMPLE_DOCS_DIR / "ferry" / "agm-minutes-2024.docx", "agm.docx")[
        0
    ].page_content
    assert "| Kittiwake Dawn | 88 | 580 | March 2026 |" in text


def test_pdf_ruled_table_reaches_the_document_as_a_markdown_table(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 6, "The fleet at the end of 2024 is listed below.")
    with pdf.table() as table:
        for values in [HEADER, *ROWS]:
            row = table.row()
            for value in values:
                row.cell(value)
    pdf.multi_cell(0, 6, "Both vessels passed their survey in March.")
    pdf.add_page()
    pdf.multi_cell(0, 6, "A page without a table keeps its text as it was.")
    path = tmp_path / "fleet.pdf"
    pdf.output(str(path))

    documents = parse_file(path, "fleet.pdf")
    text = documents[0].page_content
    assert TABLE in text
    assert text.index("listed below") < text.index(TABLE) < text.index("survey in March")
    assert documents[1].page_content == "A page without a table keeps its text as it was."
    assert [d.metadata["page"] for d in documents] == [1, 2]
