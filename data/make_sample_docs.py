"""Write the fictional "Brindlemoor" sample corpus to data/docs/ and its eval set to data/eval/.

Run from anywhere: python data/make_sample_docs.py (output is byte-identical on every run).
"""

import csv
import html
import io
import json
import shutil
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from docx import Document
from fpdf import FPDF
from pptx import Presentation

DATA_DIR = Path(__file__).resolve().parent
DOCS_DIR = DATA_DIR / "docs"
QUESTIONS_FILE = DATA_DIR / "eval" / "questions.jsonl"

# Every timestamp that ends up inside a generated file, so reruns produce the same bytes.
FIXED_TIME = datetime(2025, 1, 15, 9, 0, 0, tzinfo=UTC)
AUTHOR = "localrag sample corpus"


def prose(text: str) -> str:
    """Collapse a wrapped triple-quoted paragraph into a single line."""
    return " ".join(text.split())


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


def normalized_zip(data: bytes) -> bytes:
    """Rewrite an OOXML package with fixed entry dates (zipfile stamps the current time)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.create_system = 3  # Unix, whatever platform runs the script
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, src.read(info))
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# about-brindlemoor.md
# --------------------------------------------------------------------------------------------

TOWN_GUIDE_MD = """\
# Brindlemoor: a short guide to the town

Brindlemoor is a small harbour town on the north shore of the Skerrow Estuary. From the
quay you look south across the Skerrow Narrows to Gullhaven Isle, and on a clear evening
you can see the lights of Halloway Point further down the coast.

## Facts at a glance

- Population: 4,318 residents at the 2021 parish count.
- Highest point: Corvane Hill, 187 metres above sea level, home of the community observatory.
- Twin town: the fishing town of Kelvasund, twinned with Brindlemoor since 1987.
- Town crest: a grey heron holding a brass key in its beak.

## History

Brindlemoor was founded in 1742 by Ottoline Vesk, a salt merchant who dug the first salt
pans on the mudflats now called Cinder Flats. For more than a century the town lived on
salt and herring, and the old salt warehouses along Tanner's Row are still standing.

The harbour wall that shelters the town, known locally as the Long Mole, is 612 metres long.
It was designed by the engineer Barnabas Quell and finished in 1868, after two winter storms
had destroyed the earlier timber pier. A bronze plaque at the seaward end lists the names of
the forty-one masons who built it.

## The Lantern Tide

The town's best-loved tradition is the Lantern Tide festival, held every year on the
second Saturday of October. At dusk, families set paper lanterns on the ebbing tide from the
Long Mole and watch them drift out towards the Narrows. The first recorded Lantern Tide
took place in 1921, to remember the crew of the herring drifter *Good Intent*, lost with all
hands the year before. The festival ends with a brass band concert in Heron Square.

## Getting around

The town centre is compact and almost entirely flat, apart from the climb up Corvane Hill.
The ferry cooperative links Brindlemoor with Gullhaven Isle and Halloway Point; see its own
pages for timetables and history. The harbour authority publishes notices to mariners for
anyone bringing a boat into the basin.
"""


def write_town_guide(path: Path) -> None:
    write_text(path, TOWN_GUIDE_MD)


# --------------------------------------------------------------------------------------------
# town/harbour-notice.txt
# --------------------------------------------------------------------------------------------

HARBOUR_NOTICE_PARAGRAPHS = [
    """Maintenance dredging of the Inner Basin will take place from 3 March to 28 March 2025.
    The work will be carried out by the bucket dredger Marrowgate, which will be moored
    alongside the East Wall when not working. Dredging will take place between 06:00 and
    18:00 each day, including weekends, weather permitting.""",
    """The North Slip will be closed to all users for the whole period. Owners of small craft
    should launch and recover from the pontoon at Tanner's Steps instead; the harbour office
    will issue temporary pontoon passes free of charge on request.""",
    """The speed limit in the Inner Basin is reduced from 5 knots to 3 knots while the
    dredger is on station. Mariners must keep well clear of the dredger and of the spoil
    barge Hestia, which will carry dredged material to the licensed disposal site at Skerrow
    Deep, marked by the yellow buoy SD-2.""",
    """All vessels moving within the harbour limits must keep a listening watch on VHF
    channel 71 (call sign "Brindlemoor Harbour") for the duration of the works. Scheduled
    ferry services are not affected by this notice.""",
    """Questions about this notice should be addressed to the harbour office on the Long Mole,
    open Monday to Friday from 08:30 to 16:30.""",
]


def write_harbour_notice(path: Path) -> None:
    header = [
        "BRINDLEMOOR HARBOUR AUTHORITY",
        "NOTICE TO MARINERS No. 7 of 2025",
        "Inner Basin: maintenance dredging and closure of the North Slip",
        "Issued 10 February 2025",
    ]
    body = [prose(p) for p in HARBOUR_NOTICE_PARAGRAPHS]  # one line per paragraph
    footer = ["Ewan Tallisker", "Harbour Master, Brindlemoor"]
    write_text(path, "\n".join(header) + "\n\n" + "\n\n".join(body) + "\n\n" + "\n".join(footer))


# --------------------------------------------------------------------------------------------
# ferry/cooperative-history.html
# --------------------------------------------------------------------------------------------

FERRY_HISTORY_SECTIONS = [
    (
        "How it started",
        [
            """For more than forty years the only boat across the Skerrow Narrows was the diesel
            ferry Dorcas Bell, which had run since 1961. When her owners announced in 2008 that
            she would be withdrawn, a group of islanders and townspeople met in the back room of
            the Cormorant Inn to look for another way.""",
            """The Brindlemoor Tidal Ferry Cooperative was founded at that meeting on 21 June
            2009, with 212 founding members. Its first chair was Agnes Penhallow, a retired
            lighthouse keeper who had spent nineteen years on the Gullhaven light.""",
        ],
    ),
    (
        "Powered by the tide",
        [
            """The cooperative's boats are electric, and the electricity comes from the water
            they cross. The Grey Otter array, six turbines anchored to the bed of the Skerrow
            Narrows, was commissioned in 2012 and has a combined capacity of 1.8 MW. Power from
            the array charges the ferries' batteries at the quay and the surplus is sold to the
            grid.""",
            """The first electric ferry, Saltwren, was launched in April 2011 at the Aldous boat
            yard in Port Kessing. Until the turbines were running she charged from a borrowed
            shore supply at the fish market.""",
        ],
    ),
    (
        "Membership",
        [
            """Anyone who lives in the Skerrow district can join. A single share costs £25 and
            every member has one vote, however many shares they hold. Surplus income is
            reinvested in the boats and the turbines rather than paid out.""",
            """In 2019 the cooperative won the Coastal Communities Energy Award for showing that
            a small community could run its own transport on its own tidal power.""",
        ],
    ),
]


def write_ferry_history(path: Path) -> None:
    title = "The Brindlemoor Tidal Ferry Cooperative: our story"
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '  <meta charset="utf-8">',
        f"  <title>{html.escape(title)}</title>",
        "</head>",
        "<body>",
        f"  <h1>{html.escape(title)}</h1>",
    ]
    for heading, paragraphs in FERRY_HISTORY_SECTIONS:
        lines.append(f"  <h2>{html.escape(heading)}</h2>")
        lines.extend(f"  <p>{html.escape(prose(p))}</p>" for p in paragraphs)
    lines += ["</body>", "</html>"]
    write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# ferry/timetable.csv
# --------------------------------------------------------------------------------------------

QUAY, ISLE, POINT = "Brindlemoor Quay", "Gullhaven Isle", "Halloway Point"
TIMETABLE_HEADER = ["departure", "from", "to", "vessel", "days", "crossing_minutes", "notes"]
TIMETABLE_ROWS = [
    ["07:15", QUAY, ISLE, "Saltwren", "Mon-Sat", 22, "First sailing; bicycles carried free"],
    ["08:00", ISLE, QUAY, "Saltwren", "Mon-Sat", 22, ""],
    ["08:30", QUAY, POINT, "Kittiwake Dawn", "Daily", 35, ""],
    ["09:45", POINT, QUAY, "Kittiwake Dawn", "Daily", 35, ""],
    ["10:00", QUAY, ISLE, "Saltwren", "Daily", 22, ""],
    ["11:00", ISLE, QUAY, "Saltwren", "Daily", 22, ""],
    ["12:30", QUAY, POINT, "Kittiwake Dawn", "Daily", 35, "Calls at Mussel Rock on request"],
    ["13:45", POINT, QUAY, "Kittiwake Dawn", "Daily", 35, ""],
    ["14:00", QUAY, ISLE, "Saltwren", "Daily", 22, ""],
    ["15:00", ISLE, QUAY, "Saltwren", "Daily", 22, ""],
    ["16:30", QUAY, POINT, "Kittiwake Dawn", "Mon-Fri", 35, "School run; pupils board first"],
    ["17:45", POINT, QUAY, "Kittiwake Dawn", "Mon-Fri", 35, ""],
    ["18:40", QUAY, ISLE, "Saltwren", "Fri-Sat", 22, "Late sailing; tide permitting"],
    ["19:30", ISLE, QUAY, "Saltwren", "Fri-Sat", 22, "Last sailing of the day"],
]


def write_timetable(path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(TIMETABLE_HEADER)
        writer.writerows(TIMETABLE_ROWS)


# --------------------------------------------------------------------------------------------
# ferry/agm-minutes-2024.docx
# --------------------------------------------------------------------------------------------

AGM_SECTIONS = [
    (
        "Attendance",
        [
            """The Annual General Meeting of the Brindlemoor Tidal Ferry Cooperative was held
            on 14 November 2024 at the Netmenders' Hall, Quay Street, and opened at 19:00.
            147 members were present in person, well above the quorum of 100. The chair,
            Marisol Okonedo, presided; the secretary, Declan Fairweather, took the minutes.""",
        ],
    ),
    (
        "Chair's report",
        [
            """The chair reported 118,460 passenger journeys in the year to 30 September 2024,
            the busiest year since the cooperative began. Reliability was 97.2 per cent of
            scheduled sailings; most cancellations were due to the October gales.""",
            """She thanked the volunteer crew who kept the Halloway Point route running while
            the Kittiwake Dawn was out of the water for propeller repairs in June.""",
        ],
    ),
    ("Fleet", ["The meeting noted the current fleet, summarised in the table below."]),
    (
        "Resolutions",
        [
            """Resolution 1: to order a third electric ferry, to be named Marram Light, from
            Tregarrow Boatworks at a cost of £1.4 million. Carried with 131 votes for,
            9 against and 7 abstentions.""",
            """Resolution 2: that passengers under 16 travel free on all routes from
            1 January 2025. Carried unanimously.""",
        ],
    ),
    (
        "Any other business",
        [
            """The lease of the quay café was renewed with Hettie Marr for a further five
            years. The meeting closed at 21:10.""",
        ],
    ),
]
FLEET_TABLE = [
    ["Vessel", "Passenger capacity", "Battery (kWh)", "Next refit"],
    ["Saltwren", "64", "420", "January 2025"],
    ["Kittiwake Dawn", "88", "580", "March 2026"],
]


def write_agm_minutes(path: Path) -> None:
    doc = Document()
    doc.add_heading("Brindlemoor Tidal Ferry Cooperative", level=0)
    doc.add_paragraph("Minutes of the Annual General Meeting, 14 November 2024")
    for heading, paragraphs in AGM_SECTIONS:
        doc.add_heading(heading, level=1)
        for paragraph in paragraphs:
            doc.add_paragraph(prose(paragraph))
        if heading == "Fleet":
            table = doc.add_table(rows=len(FLEET_TABLE), cols=len(FLEET_TABLE[0]))
            table.style = "Table Grid"
            for row, values in zip(table.rows, FLEET_TABLE, strict=True):
                for cell, value in zip(row.cells, values, strict=True):
                    cell.text = value

    props = doc.core_properties
    props.title = "AGM minutes 2024"
    props.author = props.last_modified_by = AUTHOR
    props.created = props.modified = FIXED_TIME
    props.revision = 1

    buffer = io.BytesIO()
    doc.save(buffer)
    path.write_bytes(normalized_zip(buffer.getvalue()))


# --------------------------------------------------------------------------------------------
# observatory/visitor-guide.pptx
# --------------------------------------------------------------------------------------------

VISITOR_GUIDE_SLIDES = [
    (
        "Our telescope",
        [
            "The main instrument is a 610 mm reflecting telescope nicknamed Lamplighter",
            "Lamplighter was installed in 2016 under a 5-metre dome on the summit",
            "A small solar telescope is used for daytime sessions on Saturdays",
        ],
    ),
    (
        "Public observing nights",
        [
            "Every Thursday, starting at 20:30 from October to March",
            "From April to September sessions start later, at 21:45",
            "Tickets cost £6 for adults; children under 12 come free",
            "Book at the Brindlemoor library desk or simply turn up if there is space",
        ],
    ),
    (
        "Getting here",
        [
            "Climb the 388 steps of the Corvane Steps from Chandler Lane",
            "Or take bus 9A to the Hilltop Gate stop, a five-minute walk from the dome",
            "There is no car parking at the summit",
            "Bring warm clothes and a red torch: white light spoils everyone's night vision",
        ],
    ),
    (
        "Why the sky is so dark",
        [
            "The sky over Corvane Hill is rated Bortle class 3",
            "Streetlights on Corvane Road are dimmed after 23:00",
            "The dimming was agreed with the parish council in 2018",
        ],
    ),
]


def write_visitor_guide(path: Path) -> None:
    prs = Presentation()
    title_slide = prs.slides.add_slide(prs.slide_layouts[0])
    title_slide.shapes.title.text = "Corvane Hill Community Observatory"
    title_slide.placeholders[1].text = "Visitor guide for the 2025 season"

    for title, bullets in VISITOR_GUIDE_SLIDES:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for bullet in bullets[1:]:
            body.add_paragraph().text = bullet

    props = prs.core_properties
    props.title = "Corvane Hill Community Observatory: visitor guide"
    props.author = props.last_modified_by = AUTHOR
    props.created = props.modified = FIXED_TIME
    props.revision = 1

    buffer = io.BytesIO()
    prs.save(buffer)
    path.write_bytes(normalized_zip(buffer.getvalue()))


# --------------------------------------------------------------------------------------------
# observatory/annual-report-2024.pdf (one section per page, so page numbers matter)
# --------------------------------------------------------------------------------------------

ANNUAL_REPORT_PAGES = [
    (
        "1. Director's introduction",
        [
            """2024 was the busiest year in the history of the Corvane Hill Community
            Observatory. We welcomed 6,925 visitors, up from 5,310 the year before, and not one
            public night had to be cancelled for lack of volunteers.""",
            """The observatory is run entirely by volunteers, and at the end of the year we had
            58 active volunteers on the rota, twelve of them trained this year as telescope
            operators. I am grateful to every one of them.""",
            """Our busiest single night was 14 December, when 412 people came up the hill to
            watch the Geminid meteor shower. The queue for the dome reached the bottom of the
            Corvane Steps, and the tea urn ran dry twice.""",
            """This report summarises our science work on page 2 and our finances and plans for
            2025 on page 3.""",
            "Dr. Ilse Farrowby, Director",
        ],
    ),
    (
        "2. Science and observing",
        [
            """Volunteers logged 1,204 hours of clear-sky observing in 2024, the most since the
            observatory opened. Cloud cover was unusually low in February and again in late
            August.""",
            """The asteroid team, led by volunteer Rosalind Achterberg, submitted 37 sets of
            minor-planet position measurements. Two of our measurements helped confirm the orbit
            of a near-Earth object that had been lost after its discovery in 2019.""",
            """In May 2024 we installed an all-sky meteor camera on the roof of the dome. By 31
            December it had recorded 2,861 meteors, which are shared with a regional network of
            amateur meteor cameras to work out their orbits.""",
            """The variable-star group followed eleven stars through the year and ran a
            beginners' workshop on estimating brightness by eye, attended by 23 people.""",
        ],
    ),
    (
        "3. Finances and plans for 2025",
        [
            """Total income for 2024 was £48,300, of which ticket sales and donations on public
            nights made up just over half. The Skerrow Coast Heritage Fund gave us a grant of
            £12,000 towards the upkeep of the dome.""",
            """Our largest expense was the replacement of the dome rotation motor, which failed
            in March and cost £7,450 to replace. Electricity, insurance and the tea urn account
            for most of the rest.""",
            """In 2025 we plan to buy a spectrograph, which volunteers have already nicknamed
            Quillon, so that visitors can see the light of stars split into its colours. The
            fundraising target is £9,800. Roof repairs to the volunteers' hut are scheduled
            for November 2025.""",
        ],
    ),
]


class ReportPDF(FPDF):
    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", size=9)
        self.cell(0, 10, f"Annual Report 2024 - page {self.page_no()}", align="C")


def write_annual_report(path: Path) -> None:
    pdf = ReportPDF(format="A4")
    pdf.set_title("Corvane Hill Community Observatory: Annual Report 2024")
    pdf.set_author(AUTHOR)
    pdf.set_producer(AUTHOR)  # the default names the fpdf2 version, which would change bytes
    pdf.set_creation_date(FIXED_TIME)
    pdf.set_auto_page_break(auto=False)

    for number, (heading, paragraphs) in enumerate(ANNUAL_REPORT_PAGES, start=1):
        pdf.add_page()
        if number == 1:
            pdf.set_font("Helvetica", style="B", size=16)
            pdf.multi_cell(0, 9, "Corvane Hill Community Observatory\nAnnual Report 2024")
            pdf.ln(4)
        pdf.set_font("Helvetica", style="B", size=13)
        pdf.multi_cell(0, 8, heading)
        pdf.ln(2)
        pdf.set_font("Helvetica", size=11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, prose(paragraph))
            pdf.ln(3)
        if pdf.get_y() > pdf.h - 25:
            raise RuntimeError(f"Page {number} of the annual report overflows")

    pdf.output(str(path))


# --------------------------------------------------------------------------------------------
# observatory/perseids-volunteers.eml
# --------------------------------------------------------------------------------------------

PERSEIDS_EMAIL_PARAGRAPHS = [
    "Dear volunteers,",
    """Our Perseids watch party will be on the night of 12 August 2025. This year it will be
    held on Gorse Meadow, just below the summit, rather than at the dome, so that everyone can
    lie back on the grass and see the whole sky. The gate opens at 21:00.""",
    """We need 14 volunteers to act as marshals on the night: guiding people up from the bus
    stop, keeping the paths clear and making sure nobody wanders off with a white torch.
    Please add your name to the sign-up sheet by 1 August.""",
    """A reminder that the main telescope will be out of action from 21 July to 4 August
    while its mirror is re-aluminised by Aldermoss Optics in Kelvasund. Public nights in that
    period will use the binoculars and the solar telescope only.""",
    """Finally, some news about Sextant, the observatory cat. After three winters of sleeping
    on the warm-room radiator, he has retired and now lives with volunteer Greta Pennock on
    Chandler Lane. Visits are welcome, treats less so.""",
    "Clear skies,",
    "Juniper Ashcombe\nOutreach coordinator, Corvane Hill Community Observatory",
]


def write_perseids_email(path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "Juniper Ashcombe <outreach@corvanehill-observatory.example>"
    msg["To"] = "Observatory volunteers <volunteers@corvanehill-observatory.example>"
    msg["Subject"] = "Perseids watch party, mirror cleaning and news of Sextant"
    sent = datetime(2025, 7, 15, 18, 22, 0, tzinfo=timezone(timedelta(hours=1)))
    msg["Date"] = format_datetime(sent)
    msg["Message-ID"] = "<20250715182200.perseids@corvanehill-observatory.example>"
    # Wrapped to 76 columns so the body stays plain 7-bit text rather than quoted-printable.
    body = "\n\n".join(textwrap.fill(prose(p), width=76) for p in PERSEIDS_EMAIL_PARAGRAPHS[:-1])
    msg.set_content(body + "\n\n" + PERSEIDS_EMAIL_PARAGRAPHS[-1] + "\n")
    path.write_bytes(msg.as_bytes())


# --------------------------------------------------------------------------------------------
# The corpus and its questions, side by side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    page: int | None = None  # 1-based, for paged formats (the PDF)


@dataclass(frozen=True)
class SampleDoc:
    path: str  # relative to data/docs, forward slashes
    write: Callable[[Path], None]
    questions: tuple[Question, ...]


CORPUS = [
    SampleDoc(
        "about-brindlemoor.md",
        write_town_guide,
        (
            Question("Who founded the town of Brindlemoor?", "Ottoline Vesk"),
            Question("How long is Brindlemoor's harbour wall, the Long Mole?", "612 metres"),
            Question(
                "When is the Lantern Tide festival held in Brindlemoor?",
                "second Saturday of October",
            ),
            Question("How many people live in Brindlemoor?", "4,318"),
        ),
    ),
    SampleDoc(
        "town/harbour-notice.txt",
        write_harbour_notice,
        (
            Question("Who is the harbour master in Brindlemoor?", "Ewan Tallisker"),
            Question(
                "Between which dates is the Inner Basin at Brindlemoor being dredged?",
                "3 March to 28 March 2025",
            ),
            Question(
                "What radio channel should boats listen to during the harbour dredging?",
                "channel 71",
            ),
            Question(
                "What is the name of the dredger working in Brindlemoor harbour?", "Marrowgate"
            ),
        ),
    ),
    SampleDoc(
        "ferry/cooperative-history.html",
        write_ferry_history,
        (
            Question(
                "How many founding members did the Brindlemoor Tidal Ferry Cooperative have?", "212"
            ),
            Question("What is the total capacity of the Grey Otter tidal turbines?", "1.8 MW"),
            Question(
                "Which diesel ferry was replaced by the cooperative's electric boats?",
                "Dorcas Bell",
            ),
            Question("How much does one membership share in the ferry cooperative cost?", "£25"),
        ),
    ),
    SampleDoc(
        "ferry/timetable.csv",
        write_timetable,
        (
            Question(
                "What time does the first ferry leave Brindlemoor Quay for Gullhaven Isle?", "07:15"
            ),
            Question(
                "How many minutes is the ferry crossing from Brindlemoor Quay to Halloway Point?",
                "35",
            ),
            Question("Which ferry departure stops at Mussel Rock on request?", "12:30"),
            Question("On which days does the 18:40 ferry to Gullhaven Isle run?", "Fri-Sat"),
        ),
    ),
    SampleDoc(
        "ferry/agm-minutes-2024.docx",
        write_agm_minutes,
        (
            Question("How many members attended the ferry cooperative's 2024 AGM?", "147"),
            Question(
                "What will the ferry cooperative's third electric ferry be called?", "Marram Light"
            ),
            Question("What is the battery capacity of the Kittiwake Dawn ferry?", "580"),
            Question(
                "From what date do children under 16 ride the Brindlemoor ferries for free?",
                "1 January 2025",
            ),
            Question(
                "How many passenger journeys did the ferry cooperative carry up to September 2024?",
                "118,460",
            ),
        ),
    ),
    SampleDoc(
        "observatory/visitor-guide.pptx",
        write_visitor_guide,
        (
            Question(
                "What is the main telescope at the Corvane Hill observatory called?", "Lamplighter"
            ),
            Question("How many steps do you climb to reach the Corvane Hill observatory?", "388"),
            Question(
                "What time do the observatory's Thursday public nights begin in winter?", "20:30"
            ),
            Question("Which bus route takes visitors to the Corvane Hill observatory?", "9A"),
        ),
    ),
    SampleDoc(
        "observatory/annual-report-2024.pdf",
        write_annual_report,
        (
            Question(
                "Who is the director of the Corvane Hill Community Observatory?",
                "Ilse Farrowby",
                page=1,
            ),
            Question(
                "How many visitors did the Corvane Hill observatory have in 2024?", "6,925", page=1
            ),
            Question(
                "How many meteors did the observatory's all-sky meteor camera record in 2024?",
                "2,861",
                page=2,
            ),
            Question(
                "Who leads the asteroid team at the Corvane Hill observatory?",
                "Rosalind Achterberg",
                page=2,
            ),
            Question(
                "How big was the Skerrow Coast Heritage Fund grant to the observatory?",
                "£12,000",
                page=3,
            ),
            Question(
                "What nickname has been given to the spectrograph the observatory plans to buy?",
                "Quillon",
                page=3,
            ),
        ),
    ),
    SampleDoc(
        "observatory/perseids-volunteers.eml",
        write_perseids_email,
        (
            Question(
                "When is the observatory's Perseids watch party taking place?", "12 August 2025"
            ),
            Question(
                "Which company is re-aluminising the mirror of the observatory's main telescope?",
                "Aldermoss Optics",
            ),
            Question(
                "How many volunteer marshals are needed for the Perseids night?", "14 volunteers"
            ),
            Question("What is the name of the Corvane Hill observatory cat?", "Sextant"),
        ),
    ),
]

# Questions the corpus cannot answer: a good pipeline says so instead of making something up.
OUT_OF_CORPUS_QUESTIONS = [
    "What is the capital of Australia?",
    "Who wrote the novel Pride and Prejudice?",
    "How do I convert a pandas DataFrame column to datetime?",
    "At what temperature in Fahrenheit does water boil at sea level?",
]


def question_records() -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for doc in CORPUS:
        for q in doc.questions:
            record: dict[str, object] = {
                "question": q.question,
                "source": doc.path,
                "answer": q.answer,
            }
            if q.page is not None:
                record["page"] = q.page
            records.append(record)
    records += [{"question": q, "source": None, "answer": None} for q in OUT_OF_CORPUS_QUESTIONS]
    return records


def main() -> None:
    shutil.rmtree(DOCS_DIR, ignore_errors=True)
    for doc in CORPUS:
        target = DOCS_DIR / doc.path
        target.parent.mkdir(parents=True, exist_ok=True)
        doc.write(target)
        print(f"wrote {target.relative_to(DATA_DIR.parent)} ({target.stat().st_size} bytes)")

    QUESTIONS_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in question_records()]
    write_text(QUESTIONS_FILE, "\n".join(lines) + "\n")
    print(f"wrote {QUESTIONS_FILE.relative_to(DATA_DIR.parent)} ({len(lines)} questions)")


if __name__ == "__main__":
    main()
