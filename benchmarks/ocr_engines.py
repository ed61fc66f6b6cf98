"""Compare OCR engines on the OCR test set: character error rate per language, pages per second,
install weight; and measure the rule for "a PDF page with no usable text layer".

    python benchmarks/ocr_set.py                      # make the set (benchmarks/ocr-set)
    python benchmarks/ocr_engines.py --engines rapidocr,tesseract --install-weight

Engines (each is run if it can be imported; name them with --engines):

- `rapidocr`: RapidOCR 3.x (`pip install rapidocr`), PP-OCRv6 small models in the wheel, on
  onnxruntime; images go through loaders.ocr.prepare (at most 2,000 pixels a side, shrunk with
  Lanczos, instead of RapidOCR's own shrinking) and its
  lines are put in reading order by loaders.ocr, as the app does; without the direction
  classifier, as the app runs it (it turned long upright lines upside down). The same for:
- `rapidocr-onnxruntime`: RapidOCR 1.4.4 (`pip install rapidocr-onnxruntime==1.4.4`),
  PP-OCRv4 models in the wheel. It needs opencv-python, whose `cv2` clashes with the
  opencv-python-headless that `rapidocr` needs: run it from a second virtual environment; the
  results file keeps each engine's latest entry, so two runs fill one table.
- `tesseract`: Debian's tesseract-ocr with tesseract-ocr-eng and tesseract-ocr-chi-sim, through
  `tesserocr` (its wheel carries libtesseract; the language data come from Debian), language
  `chi_sim+eng` on every page, as the app would have to run it without knowing the language.

Character error rate: Levenshtein distance between the engine's text and the ground truth over
the truth's length, both NFKC-normalised (full-width commas and digits count as their ASCII
forms); English with runs of whitespace as one space, Chinese with whitespace removed (an
engine that puts spaces between Chinese characters is not penalised for them). Per language,
errors and lengths are summed over pages. Pages per second: pages divided by the OCR time of
those pages (engine loading is reported apart), one page at a time, in this process, with the
engine's default threads. PDF pages are rendered with pypdfium2 at --pdf-dpi.

--install-weight resolves each engine against the public index
(`PIP_CONFIG_FILE=/dev/null pip install --dry-run --ignore-installed --report`), alone and on top
of the project's core dependencies (from pyproject.toml), and adds up the wheel sizes from the
index's JSON API; for tesseract it adds Debian's package sizes (apt-cache show).

--text-layers (on by default) reads every PDF page of the set and of data/ with pypdf and
pypdfium2: characters, characters per square inch, image coverage and garbage share, and what
loaders.ocr.text_layer_usable decides against what the page is.

Results: benchmarks/results/ocr-engines.json (date, lscpu model name, load average at start and
end, per engine: per-language CER, per-dpi and per-variant CER, pages/s, load time, install MB).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import unicodedata
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loaders.ocr import (  # noqa: E402
    garbage_fraction,
    lines_from_boxes,
    page_from_lines,
    prepare,
    text_layer_usable,
)

DEFAULT_SET = ROOT / "benchmarks" / "ocr-set"
RESULTS = ROOT / "benchmarks" / "results" / "ocr-engines.json"
TESSDATA = "/usr/share/tesseract-ocr/5/tessdata/"
ENGINES = ("rapidocr", "rapidocr-onnxruntime", "tesseract")
REQUIREMENTS = {
    "rapidocr": ["rapidocr==3.10.0", "onnxruntime"],
    "rapidocr-onnxruntime": ["rapidocr-onnxruntime==1.4.4"],
    "tesseract": ["tesserocr==2.13.0"],
}
DEBIAN_PACKAGES = {
    "tesseract": [
        "tesseract-ocr",
        "tesseract-ocr-eng",
        "tesseract-ocr-chi-sim",
        "tesseract-ocr-osd",
        "libtesseract5",
        "liblept5",
    ]
}

Recognise = Callable[[Image.Image], str]


# --- engines -----------------------------------------------------------------------------------


def load_engine(name: str) -> Recognise:
    """The engine as a function from an image to its text, lines in reading order."""
    if name == "rapidocr":
        from loaders.ocr import load_engine, ocr_image

        load_engine()  # the app's own OCR stage, with its engine settings

        def rapidocr3(image: Image.Image) -> str:
            return ocr_image(image).text

        return rapidocr3
    if name == "rapidocr-onnxruntime":
        from rapidocr_onnxruntime import RapidOCR as RapidOCR1

        engine1 = RapidOCR1()

        def rapidocr1(image: Image.Image) -> str:
            result, _ = engine1(prepare(image), use_cls=False)
            return page_from_lines(lines_from_boxes(result or [])).text

        return rapidocr1
    if name == "tesseract":
        import tesserocr

        api = tesserocr.PyTessBaseAPI(path=TESSDATA, lang="chi_sim+eng")

        def tesseract(image: Image.Image) -> str:
            api.SetImage(image.convert("L"))
            return str(api.GetUTF8Text())

        return tesseract
    raise SystemExit(f"unknown engine {name!r}; one of {', '.join(ENGINES)}")


# --- scoring -----------------------------------------------------------------------------------


def normalise(text: str, lang: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(text.split()) if lang == "zh" else " ".join(text.split())


def distance(a: str, b: str) -> int:
    try:
        from rapidfuzz.distance import Levenshtein

        return int(Levenshtein.distance(a, b))
    except ImportError:
        previous = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            current = [i]
            for j, cb in enumerate(b, 1):
                current.append(
                    min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
                )
            previous = current
        return previous[-1]


def pdf_page_images(path: Path, dpi: int) -> list[Image.Image]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path)
    try:
        return [page.render(scale=dpi / 72, grayscale=True).to_pil() for page in pdf]
    finally:
        pdf.close()


def pages_of(set_dir: Path, pdf_dpi: int) -> list[dict[str, Any]]:
    """Every page the engines read: (image, language, truth, labels)."""
    manifest = json.loads((set_dir / "manifest.json").read_text(encoding="utf-8"))
    pages: list[dict[str, Any]] = []
    for item in manifest["items"]:
        if item["kind"] in ("page", "photo"):
            pages.append(
                {
                    "name": item["file"],
                    "lang": item["lang"],
                    "dpi": item["dpi"],
                    "variant": item["variant"],
                    "truth": item["truth"],
                    "image": lambda f=item["file"]: Image.open(set_dir / f),
                }
            )
        elif item["kind"] == "pdf":
            for entry in item["pages"]:
                if entry["layer"] in ("image", "stamp"):  # pages the app sends to OCR
                    pages.append(
                        {
                            "name": f"{item['file']}#{entry['page']}",
                            "lang": entry["lang"],
                            "dpi": pdf_dpi,
                            "variant": "pdf-scan",
                            "truth": entry["truth"],
                            "image": lambda f=item["file"], n=entry["page"]: pdf_page_images(
                                set_dir / f, pdf_dpi
                            )[n - 1],
                        }
                    )
    return pages


def run_engine(name: str, pages: list[dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    recognise = load_engine(name)
    recognise(Image.new("L", (200, 60), 255))  # first call sets up sessions
    load_seconds = time.perf_counter() - started
    errors: dict[str, int] = defaultdict(int)
    lengths: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    per_page = []
    for page in pages:
        image = page["image"]()
        image.load()
        began = time.perf_counter()
        text = recognise(image)
        took = time.perf_counter() - began
        truth = normalise(page["truth"], page["lang"])
        errs = distance(normalise(text, page["lang"]), truth)
        keys = [
            page["lang"],
            f"{page['lang']}-{page['dpi'] or 'photo'}",
            f"{page['lang']}-{page['variant']}",
        ]
        for key in keys:
            errors[key] += errs
            lengths[key] += len(truth)
            seconds[key] += took
            counts[key] += 1
        per_page.append(
            {"page": page["name"], "cer": round(errs / len(truth), 4), "seconds": round(took, 2)}
        )
        print(f"  {name:22} {page['name']:26} CER {errs / len(truth):6.3f}  {took:5.2f} s")
    total_seconds = sum(seconds[lang] for lang in ("en", "zh"))
    total_pages = sum(counts[lang] for lang in ("en", "zh"))
    return {
        "load_seconds": round(load_seconds, 2),
        "pages": total_pages,
        "pages_per_second": round(total_pages / total_seconds, 3),
        "cer": {key: round(errors[key] / lengths[key], 4) for key in sorted(errors)},
        "pages_per_second_by": {
            key: round(counts[key] / seconds[key], 3) for key in sorted(seconds)
        },
        "per_page": per_page,
        "versions": engine_versions(name),
    }


def engine_versions(name: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = {
        "rapidocr": ["rapidocr", "onnxruntime", "opencv-python-headless"],
        "rapidocr-onnxruntime": ["rapidocr-onnxruntime", "onnxruntime", "opencv-python"],
        "tesseract": ["tesserocr"],
    }[name]
    found = {}
    for package in names:
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    if name == "tesseract" and shutil.which("tesseract"):
        found["tesseract (Debian)"] = subprocess.run(
            ["tesseract", "--version"], capture_output=True, text=True, check=False
        ).stdout.split("\n")[0]
    return found


# --- install weight ------------------------------------------------------------------------------


@cache
def _release_files(name: str) -> dict[str, dict[str, int]]:
    url = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(url, timeout=60) as response:
        data = json.load(response)
    return {
        version: {f["filename"]: int(f["size"]) for f in files}
        for version, files in data["releases"].items()
    }


def resolve(requirements: list[str]) -> dict[str, int]:
    """{package==version: wheel bytes} that pip would download for `requirements`."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        env = os.environ | {"PIP_CONFIG_FILE": os.devnull}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--dry-run",
                "--ignore-installed",
                "--report",
                str(report),
                *requirements,
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        data = json.loads(report.read_text())
    sizes = {}
    for item in data["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        filename = item["download_info"]["url"].rsplit("/", 1)[-1]
        sizes[f"{name}=={version}"] = _release_files(name).get(version, {}).get(filename, 0)
    return sizes


def core_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ocr = ("rapidocr", "tesserocr", "pytesseract")
    return [d for d in project["dependencies"] if not d.lower().startswith(ocr)]


def install_weight(engine: str) -> dict[str, Any]:
    alone = resolve(REQUIREMENTS[engine])
    base = resolve(core_dependencies())
    with_core = resolve(core_dependencies() + REQUIREMENTS[engine])
    added = {k: v for k, v in with_core.items() if k not in base}
    result: dict[str, Any] = {
        "requirements": REQUIREMENTS[engine],
        "alone_mb": round(sum(alone.values()) / 1e6, 1),
        "alone": {k: round(v / 1e6, 2) for k, v in alone.items()},
        "added_to_core_mb": round(sum(added.values()) / 1e6, 1),
        "added_to_core": {k: round(v / 1e6, 2) for k, v in added.items()},
    }
    if engine in DEBIAN_PACKAGES:
        sizes = {}
        for package in DEBIAN_PACKAGES[engine]:
            shown = subprocess.run(
                ["apt-cache", "show", "--no-all-versions", package],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            size = next(
                (line.split()[1] for line in shown.splitlines() if line.startswith("Size:")), "0"
            )
            sizes[package] = int(size)
        result["debian_packages_mb"] = round(sum(sizes.values()) / 1e6, 1)
        result["debian_packages"] = {k: round(v / 1e6, 2) for k, v in sizes.items()}
        result["note"] = (
            "the Debian packages cannot come with pip install; apt-get is a second step"
        )
    return result


# --- text layers ---------------------------------------------------------------------------------


def survey_text_layers(set_dir: Path) -> list[dict[str, Any]]:
    """Each PDF page: what its text layer holds and what the rule decides."""
    import pypdfium2 as pdfium
    from pypdf import PdfReader

    from loaders.ocr import image_coverage

    expected: dict[tuple[str, int], bool] = {}
    files: list[Path] = []
    manifest = json.loads((set_dir / "manifest.json").read_text(encoding="utf-8"))
    for item in manifest["items"]:
        if item["kind"] == "pdf":
            files.append(set_dir / item["file"])
            for entry in item["pages"]:
                usable = entry["layer"] in ("text", "sparse")
                expected[(item["file"], entry["page"])] = usable
    repo_pdfs = sorted((ROOT / "data").rglob("*.pdf"))
    files += repo_pdfs
    rows = []
    for path in files:
        reader = PdfReader(path)
        pdf = pdfium.PdfDocument(path)
        for number, page in enumerate(reader.pages, 1):
            text = page.extract_text() or ""
            width, height = pdf[number - 1].get_size()
            square_inches = width * height / 72**2
            coverage = image_coverage(pdf[number - 1])
            visible = len("".join(text.split()))
            decided = text_layer_usable(text, square_inches, coverage)
            truth = expected.get((path.name, number), True)  # the repository's PDFs are text
            rows.append(
                {
                    "file": str(path.relative_to(ROOT)),
                    "page": number,
                    "chars": visible,
                    "chars_per_square_inch": round(visible / square_inches, 2),
                    "image_coverage": round(coverage, 3),
                    "garbage": round(garbage_fraction(text), 3),
                    "usable_expected": truth,
                    "usable_decided": decided,
                }
            )
        pdf.close()
    return rows


# --- main ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
            "",
        )
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="the OCR set (ocr_set.py)")
    parser.add_argument(
        "--engines", default="rapidocr,tesseract", help=f"comma-separated: {', '.join(ENGINES)}"
    )
    parser.add_argument("--pdf-dpi", type=int, default=200, help="rendering of scanned PDF pages")
    parser.add_argument("--install-weight", action="store_true", help="resolve against the index")
    parser.add_argument("--no-text-layers", action="store_true", help="skip the text-layer survey")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (merged)")
    args = parser.parse_args()

    if not (args.set / "manifest.json").is_file():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from ocr_set import build

        build(args.set)
    results: dict[str, Any] = {}
    if args.json.is_file():
        results = json.loads(args.json.read_text(encoding="utf-8"))
    results.setdefault("engines", {})
    load_start = os.getloadavg()
    pages = pages_of(args.set, args.pdf_dpi)
    for name in [n.strip() for n in args.engines.split(",") if n.strip()]:
        print(f"{name}: {len(pages)} pages")
        entry = run_engine(name, pages)
        entry["date"] = datetime.now(UTC).isoformat(timespec="seconds")
        entry["command"] = "python benchmarks/ocr_engines.py " + " ".join(sys.argv[1:])
        entry["load_average_start_end"] = [round(load_start[0], 2), round(os.getloadavg()[0], 2)]
        if args.install_weight:
            entry["install"] = install_weight(name)
        results["engines"][name] = entry
        save(args.json, results)  # each engine as soon as it is done
        load_start = os.getloadavg()
    if not args.no_text_layers:
        results["text_layers"] = survey_text_layers(args.set)
    results["machine"] = machine()
    results["command"] = (
        "python benchmarks/ocr_set.py && python benchmarks/ocr_engines.py " + " ".join(sys.argv[1:])
    )
    save(args.json, results)

    print(f"\n{'engine':22} {'CER en':>7} {'CER zh':>7} {'pages/s':>8} {'install MB':>11}")
    for name, entry in results["engines"].items():
        install = entry.get("install", {})
        added = install.get("added_to_core_mb", "")
        debian = install.get("debian_packages_mb")
        weight = f"{added}" + (f" + {debian} deb" if debian else "")
        cer = entry["cer"]
        print(
            f"{name:22} {cer.get('en', 0):7.3f} {cer.get('zh', 0):7.3f} "
            f"{entry['pages_per_second']:8.3f} {weight:>11}"
        )
    if "text_layers" in results:
        wrong = [r for r in results["text_layers"] if r["usable_expected"] != r["usable_decided"]]
        print(f"text layers: {len(results['text_layers'])} PDF pages, {len(wrong)} misjudged")
        for row in results["text_layers"]:
            print(
                f"  {row['file']:45} p{row['page']:<3} {row['chars']:5} chars "
                f"{row['chars_per_square_inch']:7.2f}/in2 images {row['image_coverage']:.2f} "
                f"expected {'text' if row['usable_expected'] else 'OCR'}, "
                f"decided {'text' if row['usable_decided'] else 'OCR'}"
            )
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
