"""Make the scan library: scanned PDFs, a scanned TIFF, page images and photos, in English and
Chinese, whose facts (names, numbers, dates, codes) are only in the images.

    python benchmarks/scan_set.py [--out benchmarks/scan-set] [--seed 7] [--files F,...]

The questions asked over it are data/eval/scan-questions.jsonl (question, source and page, the
facts the answer must hold, language); benchmarks/scan_answers.py asks them through the app.
Pages are drawn as benchmarks/ocr_set.py draws its OCR set (same fonts, degradations and
photo), from the texts below, so the same command writes the same files. It needs Debian's
fonts-wqy-zenhei and fonts-dejavu-core (and fonts-droid-fallback for the PDFs' text layers).

What it writes into --out (git-ignored): the library in `library/` (the folder to ingest) and
manifest.json beside it, listing each file's pages, how each was made and its text as laid out
(one line per rendered line):

- `en/scanned-invoice.pdf`, `zh/扫描发票.pdf`: two scanned pages (150 dpi JPEG, grey paper,
  tilted, blurred, noisy), no text layer.
- `en/board-minutes.png`, `zh/会议纪要.png`: a page at 300 dpi, turned 0.5-2 degrees.
- `en/notice-photo.jpg`, `zh/公告照片.jpg`: a notice photographed at an angle.
- `en/lease-agreement.tif`, `zh/租赁合同.tif`: a two-frame TIFF at 200 dpi, noisy then blurred.
- `en/survey-report.pdf`, `zh/水质报告.pdf`: a text-layer page that introduces the results and
  a scanned page that holds them.

--files makes only those files (relative to the library; the questions' smoke test uses it).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fpdf import FPDF
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from ocr_set import (  # noqa: E402
    _image_page,
    _new_pdf,
    degrade,
    photograph,
    render_text_page,
)

DEFAULT_OUT = ROOT / "benchmarks" / "scan-set"
QUESTIONS = ROOT / "data" / "eval" / "scan-questions.jsonl"


@dataclass(frozen=True)
class Page:
    paragraphs: tuple[str, ...]
    # text (a PDF text layer), scan (grey, tilted, blurred, noisy), rotated, noisy, blurred,
    # photo (a card photographed at an angle)
    look: str
    dpi: int = 150


@dataclass(frozen=True)
class Document:
    file: str  # relative to the library folder
    lang: str  # en | zh
    pages: tuple[Page, ...]


def _page(look: str, dpi: int, *paragraphs: str) -> Page:
    return Page(tuple(paragraphs), look, dpi)


DOCUMENTS = (
    Document(
        "en/scanned-invoice.pdf",
        "en",
        (
            _page(
                "scan",
                150,
                "HARWICK & DUNMORE MARINE SUPPLIES",
                "Unit 4, Saltpan Lane, Brindlemoor",
                "INVOICE",
                "Invoice number: HD-20417",
                "Invoice date: 14 February 2025",
                "Bill to: Brindlemoor Harbour Authority, Harbour Office, East Quay",
                "40 metres of galvanised mooring chain, 12 mm: £1,160.00",
                "6 fender buoys, size 5: £1,422.00",
                "Shackles and swivels, assorted: £640.00",
                "Delivery to East Quay: £620.60",
                "Total due: £3,842.60",
            ),
            _page(
                "scan",
                150,
                "Payment terms",
                "Payment is due within 30 days, by 16 March 2025.",
                "Pay by bank transfer to Harwick & Dunmore Ltd, sort code 40-18-22, account "
                "71930468, quoting the invoice number.",
                "A late payment charge of 2% per month applies after the due date.",
                "Questions about this invoice: Oriel Fenwick, accounts manager, telephone "
                "01632 960418.",
                "Goods remain the property of Harwick & Dunmore until paid in full.",
            ),
        ),
    ),
    Document(
        "en/board-minutes.png",
        "en",
        (
            _page(
                "rotated",
                300,
                "Brindlemoor Ferry Cooperative",
                "Minutes of the board meeting held on 9 April 2025 at the Ferry House",
                "Present: Tamsin Greaves (chair), Rowan Pike (treasurer), Hollis Baptiste, "
                "Maud Ellery",
                "1. The treasurer reported a surplus of £18,450 for the winter season.",
                "2. The board agreed to raise the adult single fare from £3.80 to £4.20 from "
                "1 June 2025.",
                "3. The relief skipper post goes to Hollis Baptiste.",
                "4. The slipway repairs will be put out to tender; quotes are due by 2 May 2025.",
                "5. The next board meeting will be held on 11 June 2025 at 7 pm.",
            ),
        ),
    ),
    Document(
        "en/notice-photo.jpg",
        "en",
        (
            _page(
                "photo",
                200,
                "LIGHTHOUSE OPEN DAY",
                "Saturday 24 May 2025, 10 am to 4 pm",
                "350 free places, book at the harbour office",
                "Coordinator: Felix Ambrose",
            ),
        ),
    ),
    Document(
        "en/lease-agreement.tif",
        "en",
        (
            _page(
                "noisy",
                200,
                "LEASE OF WORKSHOP PREMISES",
                "This lease is made between the Brindlemoor Harbour Authority (the landlord) "
                "and Marlow Boatworks Ltd (the tenant).",
                "Premises: workshop unit 7B, North Boatyard, Brindlemoor.",
                "Rent: £1,275 per month, payable in advance on the first day of each month.",
                "The lease starts on 1 July 2025.",
                "The tenant may use the premises for building and repairing small boats only.",
            ),
            _page(
                "blurred",
                200,
                "Term and deposit",
                "The term of this lease is 36 months from the start date.",
                "The tenant pays a deposit of £3,825 before taking possession.",
                "Either party may end the lease with six months' written notice.",
                "Signed for the landlord: Agnes Whitcombe, harbour master",
                "Signed for the tenant: Desmond Marlow, director",
            ),
        ),
    ),
    Document(
        "en/survey-report.pdf",
        "en",
        (
            _page(
                "text",
                150,
                "Harbour survey programme 2024",
                "The harbour authority surveys the depth of every berth twice a year, in spring "
                "and in autumn. The results are compared with the charted depths and decide "
                "where dredging is needed.",
                "The results of the autumn survey are on the following page.",
            ),
            _page(
                "scan",
                150,
                "Autumn depth survey: results",
                "Survey date: 28 October 2024",
                "Surveyor: Ishaan Cole, Tidewater Hydrographic",
                "Berth 1: 5.2 metres at low water",
                "Berth 2: 5.0 metres at low water",
                "Berth 3: 4.6 metres at low water, below the charted 5.5 metres",
                "Recommendation: dredge berth 3 before March 2025.",
            ),
        ),
    ),
    Document(
        "zh/扫描发票.pdf",
        "zh",
        (
            _page(
                "scan",
                150,
                "兰溪青石印务有限公司",
                "地址：兰溪市临江路88号",
                "增值税普通发票",
                "发票号码：LX-58213",
                "开票日期：2025年3月12日",
                "购买方：兰溪市文化馆",
                "项目：展览画册印刷500册，单价6.80元，金额3,400元",
                "项目：海报印刷200张，单价4.50元，金额900元",
                "项目：设计费，金额416元",
                "合计金额：4,716元",
            ),
            _page(
                "scan",
                150,
                "付款说明",
                "请于2025年4月30日前付款。",
                "开户银行：兰溪农商银行临江支行",
                "账号：6230581200479316",
                "付款时请注明发票号码。",
                "如有疑问，请联系财务部钱思远，电话0579-88264417。",
                "感谢惠顾。",
            ),
        ),
    ),
    Document(
        "zh/会议纪要.png",
        "zh",
        (
            _page(
                "rotated",
                300,
                "兰溪古镇旅游协会理事会会议纪要",
                "会议时间：2025年5月8日下午2时",
                "会议地点：协会二楼会议室",
                "主持人：林晓峰",
                "出席：陈雨桐、王建国、赵明轩",
                "一、秘书长汇报：一季度接待游客12.6万人次。",
                "二、会议决定：古镇门票自2025年7月1日起调整为35元。",
                "三、会议决定：增设夜游线路一条，由赵明轩负责。",
                "四、下次理事会会议定于2025年7月3日召开。",
            ),
        ),
    ),
    Document(
        "zh/公告照片.jpg",
        "zh",
        (
            _page(
                "photo",
                200,
                "通济桥修缮公告",
                "通济桥自2025年6月16日起封闭施工，工期42天，请绕行兰江大桥。",
                "施工负责人：韩立群",
            ),
        ),
    ),
    Document(
        "zh/租赁合同.tif",
        "zh",
        (
            _page(
                "noisy",
                200,
                "商铺租赁合同",
                "出租方：兰溪古镇管理有限公司",
                "承租方：兰溪云帆茶社",
                "租赁铺位：古镇东街B12号铺位，面积48平方米。",
                "月租金：人民币6,800元，每月5日前支付。",
                "起租日期：2025年9月1日。",
            ),
            _page(
                "blurred",
                200,
                "租期与押金",
                "租期为24个月，自起租日起计算。",
                "承租方应于签约时支付押金13,600元。",
                "任何一方提前解约，须提前三个月书面通知对方。",
                "出租方代表签字：何静宜",
                "承租方代表签字：潘志远",
            ),
        ),
    ),
    Document(
        "zh/水质报告.pdf",
        "zh",
        (
            _page(
                "text",
                150,
                "兰江水质监测年度计划",
                "本站每季度对兰江三个断面进行水质监测，监测项目包括溶解氧、氨氮和总磷。",
                "第四季度的监测结果见下页。",
            ),
            _page(
                "scan",
                150,
                "第四季度水质监测结果",
                "采样日期：2024年11月19日",
                "检测员：苏文博",
                "一号断面：溶解氧7.4毫克每升，氨氮0.21毫克每升。",
                "二号断面：溶解氧6.9毫克每升，氨氮0.35毫克每升。",
                "三号断面：溶解氧6.1毫克每升，氨氮0.48毫克每升。",
                "结论：三个断面均达到二类水质标准。",
            ),
        ),
    ),
)


def render(page: Page, lang: str) -> tuple[Image.Image, list[str]]:
    """The page as printed (white, upright) and its lines; every paragraph must fit."""
    text = list(page.paragraphs)
    if page.look == "photo":  # a card, as ocr_set's photo
        image, lines = render_text_page(
            lang, page.dpi, 0, size_inches=(6.0, 4.0), points=16, margin_inches=0.4, text=text
        )
    else:
        image, lines = render_text_page(lang, page.dpi, 0, text=text)
    drawn = "".join("".join(lines).split())
    if drawn != "".join("".join(page.paragraphs).split()):
        raise ValueError(f"the text does not fit the page: {page.paragraphs[0]!r}")
    return image, lines


def looks(page: Image.Image, page_spec: Page, rng: np.random.Generator) -> Image.Image:
    if page_spec.look == "photo":
        return photograph(page, rng)
    return degrade(page, page_spec.look, page_spec.dpi, rng)


def write(document: Document, out: Path, rng: np.random.Generator) -> list[dict[str, object]]:
    """Write one document; its pages for the manifest."""
    path = out / document.file
    path.parent.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, object]] = []
    images: list[Image.Image] = []
    pdf = _new_pdf() if path.suffix == ".pdf" else None
    for number, spec in enumerate(document.pages, 1):
        printed, lines = render(spec, document.lang)
        entries.append(
            {
                "page": number,
                "look": spec.look,
                "dpi": spec.dpi,
                "ocr": spec.look != "text",
                "truth": "\n".join(lines),
            }
        )
        if spec.look == "text":
            if pdf is None:
                raise ValueError(f"{document.file}: a text layer needs a PDF")
            _text_page(pdf, document.lang, lines)
            continue
        image = looks(printed, spec, rng)
        if pdf is not None:
            _image_page(pdf, image)
        else:
            images.append(image)
    if pdf is not None:
        pdf.output(str(path))
    elif path.suffix == ".jpg":
        images[0].save(path, quality=55)
    elif path.suffix == ".tif":
        frames = [image.convert("L") for image in images]
        frames[0].save(path, save_all=True, append_images=frames[1:], compression="tiff_deflate")
    else:
        images[0].save(path)
    return entries


def _text_page(pdf: FPDF, lang: str, lines: list[str]) -> None:
    """A page of real text, 11 pt from the top left margin, as the lines were laid out."""
    pdf.add_page()
    pdf.set_font("cjk" if lang == "zh" else "latin", size=11)
    pdf.set_xy(25.4, 25.4)
    for line in lines:
        pdf.cell(0, 5.8, line, new_x="LMARGIN", new_y="NEXT")
        pdf.set_x(25.4)


def build(out: Path, seed: int = 7, files: set[str] | None = None) -> dict[str, object]:
    """Write the library (or only `files`) into out/library and out/manifest.json; returns the
    manifest."""
    library = out / "library"
    library.mkdir(parents=True, exist_ok=True)
    unknown = (files or set()) - {d.file for d in DOCUMENTS}
    if unknown:
        raise SystemExit(f"not in the scan set: {', '.join(sorted(unknown))}")
    written = []
    for document in DOCUMENTS:
        if files is not None and document.file not in files:
            continue
        # Each document draws from its own generator: a file is the same whichever are made.
        rng = np.random.default_rng([seed, DOCUMENTS.index(document)])
        pages = write(document, library, rng)
        written.append({"file": document.file, "lang": document.lang, "pages": pages})
    manifest: dict[str, object] = {"seed": seed, "files": written}
    (out / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write into")
    parser.add_argument("--seed", type=int, default=7, help="random seed (noise, angles)")
    parser.add_argument("--files", help="comma-separated files to make (default: all)")
    args = parser.parse_args()
    files = set(args.files.split(",")) if args.files else None
    manifest = build(args.out, args.seed, files)
    entries = manifest["files"]
    assert isinstance(entries, list)
    pages = sum(len(entry["pages"]) for entry in entries)
    print(f"{len(entries)} files, {pages} pages written to {args.out / 'library'}")


if __name__ == "__main__":
    main()
