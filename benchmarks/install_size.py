"""What the README's first command downloads, as a newcomer's pip sees it (the public index alone).

    python benchmarks/install_size.py [--platform linux|macos|windows|all] [--also REQ ...]
                                      [--install] [--results-dir benchmarks/results]

Reads the README's first ```bash block and takes every `pip install` in it. Each one is resolved
with `python -m pip install --dry-run --ignore-installed --report r.json ARGS` in this checkout,
with `PIP_CONFIG_FILE=/dev/null` and no other `PIP_*` setting that changes where packages come
from (this machine's pip has a local wheel store and a constraints file; a newcomer's has not).
Each file's size then comes from the index's JSON API (`/pypi/<name>/<version>/json`), matched by
the exact file name in the report's download url.

Platforms: Linux x86_64 is this machine, resolved exactly as the README says. macOS arm64 and
Windows amd64 are resolved with `--platform/--python-version 3.11/--only-binary=:all:`, with
pip's environment markers set to that platform (pip evaluates them on the machine it runs on,
whatever `--platform` says). A package that the Linux resolution took as a source archive
(llama-cpp-python, which compiles on install; langdetect, pure Python) cannot take part in a
binary-only resolution: it is given a stand-in wheel of the same name, version and
`Requires-Dist` (so its own dependencies are still resolved for that platform), and counted at
its source archive's size, as on Linux.

`--also rapidocr-onnxruntime==1.4.4` adds requirements to the first `pip install` (to see what a
planned dependency would add). `--install` (Linux only) then runs the command's pip installs for
real in a fresh venv (`PIP_CONFIG_FILE=/dev/null`, no pip cache, the README's `CMAKE_ARGS`), and
reports their wall time and the venv's installed size (`du -sb`).

Writes `install-size-<platform>.json` (date, machine, load, the figures) per platform and prints
a summary: total download MB, package count, the 15 largest, and whether torch, NVIDIA's CUDA
wheels or triton are in it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.evaluation.report import load_average, write_results  # noqa: E402

INDEX_JSON = "https://pypi.org/pypi/{name}/{version}/json"
PLATFORMS: dict[str, list[str]] = {
    "linux": [],  # this machine: resolved as the README says
    "macos": ["--platform", "macosx_14_0_arm64"],
    "windows": ["--platform", "win_amd64"],
}
PLATFORM_LABELS = {
    "linux": "Linux x86_64 (this machine)",
    "macos": "macOS arm64 (macosx_14_0_arm64, CPython 3.11)",
    "windows": "Windows amd64 (win_amd64, CPython 3.11)",
}
# pip evaluates environment markers (`platform_system == "Linux"`, ...) against the machine it
# runs on, whatever --platform says: torch would then ask for NVIDIA's Linux wheels on macOS.
# For another platform pip is run with its marker environment set to that platform's.
MARKERS: dict[str, dict[str, str]] = {
    "macos": {
        "sys_platform": "darwin",
        "platform_system": "Darwin",
        "platform_machine": "arm64",
        "os_name": "posix",
    },
    "windows": {
        "sys_platform": "win32",
        "platform_system": "Windows",
        "platform_machine": "AMD64",
        "os_name": "nt",
    },
}
PIP_WITH_MARKERS = """
import sys
from pip._vendor.packaging import markers
host = markers.default_environment
markers.default_environment = lambda: {**host(), **TARGET}
from pip._internal.cli.main import main
sys.exit(main())
"""
CROSS_FLAGS = ["--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:"]
# pip settings that change where packages come from; a newcomer has none of them.
PIP_KEEP = {"PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK"}
HEAVY = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
WATCHED = ("torch", "transformers", "sentence-transformers", "scikit-learn", "scipy")
MB = 1_000_000


@dataclass
class PipInstall:
    """One `pip install` of the README's command: its arguments and environment."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def no_deps(self) -> bool:
        return "--no-deps" in self.args


def first_command(readme: Path) -> str:
    """The README's first ```bash block: the fresh-machine command."""
    match = re.search(r"```bash\n(.+?)\n```", readme.read_text(encoding="utf-8"), re.DOTALL)
    if not match:
        raise SystemExit(f"No ```bash block in {readme}")
    return match.group(1).strip()


def pip_installs(command: str) -> list[PipInstall]:
    """Every `[VAR=value ...] python -m pip install ARGS` of a `&&` chain, `$PWD` expanded."""
    found = []
    for part in command.split("&&"):
        words = shlex.split(part.replace("$PWD", str(ROOT)))
        env = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        if "pip" in words and "install" in words:
            found.append(PipInstall(words[words.index("install") + 1 :], env))
    if not found:
        raise SystemExit(f"No pip install in the README's first command: {command}")
    return found


def newcomer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in PIP_KEEP}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env | (extra or {})


def index_json(name: str, version: str | None = None) -> dict[str, Any]:
    name = re.sub(r"[-_.]+", "-", name).lower()
    url = (
        INDEX_JSON.format(name=name, version=version)
        if version
        else f"https://pypi.org/pypi/{name}/json"
    )
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise LookupError(url) from exc
        raise SystemExit(f"{url}: {exc}") from exc
    return data


def release_files(name: str, version: str) -> list[dict[str, Any]]:
    """The index's files of one release: `/pypi/<name>/<version>/json`, or the project's
    `releases` when that answers 404 (it does for some releases)."""
    try:
        files: list[dict[str, Any]] = index_json(name, version)["urls"]
    except LookupError:
        files = index_json(name)["releases"].get(version, [])
    return files


def stand_in_wheel(name: str, version: str, requires: list[str], folder: Path) -> Path:
    """A wheel that says what a source archive says (name, version, Requires-Dist), so that a
    binary-only resolution for another platform can go through it."""
    dist = re.sub(r"[-_.]+", "_", name).lower()
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    files = {
        f"{dist}-{version}.dist-info/METADATA": "\n".join(metadata) + "\n",
        f"{dist}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: install_size\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record_name = f"{dist}-{version}.dist-info/RECORD"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{record_name},,")
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(record_name, "\n".join(record) + "\n")
    return wheel


def resolve(
    install: PipInstall, platform: str, also: list[str], scratch: Path, sources: list[dict]
) -> list[dict]:
    """pip's dry-run report of one `pip install` for one platform: its `install` entries."""
    report = scratch / f"report-{platform}-{abs(hash(tuple(install.args)))}.json"
    pip = [sys.executable, "-m", "pip"]
    if platform in MARKERS:
        pip = [sys.executable, "-c", PIP_WITH_MARKERS.replace("TARGET", repr(MARKERS[platform]))]
    cmd = [*pip, "install", "--dry-run", "--ignore-installed", "--quiet"]
    cmd += ["--report", str(report), *install.args, *also]
    if PLATFORMS[platform]:
        cmd += [*PLATFORMS[platform], *CROSS_FLAGS]
        stand_ins = scratch / "stand-ins"
        if not stand_ins.is_dir():
            stand_ins.mkdir()
            for entry in sources:
                meta = entry["metadata"]
                stand_in_wheel(
                    meta["name"], meta["version"], meta.get("requires_dist", []), stand_ins
                )
        cmd += ["--find-links", str(stand_ins)]
    print(f"[{platform}] pip {shlex.join(cmd[len(pip) :])}", file=sys.stderr, flush=True)
    done = subprocess.run(
        cmd, cwd=ROOT, env=newcomer_env(install.env), capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"pip could not resolve for {platform}")
    entries: list[dict] = json.loads(report.read_text())["install"]
    return entries


def sized(entry: dict) -> dict[str, Any]:
    """One report entry with its file's size from the index (a stand-in wheel or a source
    archive: the source archive's size)."""
    name, version = entry["metadata"]["name"], entry["metadata"]["version"]
    info = entry.get("download_info", {})
    url = info.get("url", "")
    if "dir_info" in info:
        return {"name": name, "version": version, "file": "(this project)", "bytes": 0}
    filename = unquote(Path(urlparse(url).path).name)
    files = release_files(name, version)
    match = [f for f in files if f["filename"] == filename]
    if not match and filename.endswith(".whl"):  # a version the index spells otherwise (13.0.3)
        releases = index_json(name)["releases"].values()
        match = [f for files_ in releases for f in files_ if f["filename"] == filename]
    kind = "wheel"
    if not match:  # a stand-in wheel: count the archive pip would build from
        match = [f for f in files if f["packagetype"] == "sdist"]
        kind = "sdist (stand-in wheel in the resolution)"
    elif filename.endswith((".tar.gz", ".zip")):
        kind = "sdist"
    if not match:
        raise SystemExit(f"{name} {version}: {filename} is not on the index")
    return {
        "name": name,
        "version": version,
        "file": match[0]["filename"],
        "kind": kind,
        "bytes": int(match[0]["size"]),
    }


def resolve_all(
    platform: str, installs: list[PipInstall], also: list[str], sources: list[dict]
) -> list[dict]:
    """The report entries of every pip install of the command (a later install wins)."""
    with tempfile.TemporaryDirectory(prefix="install-size-") as tmp:
        scratch = Path(tmp)
        chosen: dict[str, dict] = {}
        for number, install in enumerate(installs):
            extra = also if number == 0 else []
            for entry in resolve(install, platform, extra, scratch, sources):
                chosen[entry["metadata"]["name"].lower()] = entry
    return list(chosen.values())


def source_only(entries: list[dict]) -> list[dict]:
    """Entries pip resolved to a source archive (the index has no wheel for this machine)."""
    return [
        e
        for e in entries
        if e.get("download_info", {}).get("url", "").endswith((".tar.gz", ".zip", ".tar.bz2"))
    ]


def measure(platform: str, entries: list[dict]) -> dict[str, Any]:
    chosen = {e["metadata"]["name"].lower(): e for e in entries}
    packages = sorted((sized(e) for e in chosen.values()), key=lambda p: -p["bytes"])
    packages = [p for p in packages if p["file"] != "(this project)"]
    total = sum(p["bytes"] for p in packages)
    heavy = [p for p in packages if HEAVY.match(p["name"].lower())]
    names = {p["name"].lower() for p in packages}
    return {
        "platform": PLATFORM_LABELS[platform],
        "total_mb": round(total / MB, 1),
        "packages": len(packages),
        "torch_nvidia_triton_mb": round(sum(p["bytes"] for p in heavy) / MB, 1),
        "present": {
            "torch": "torch" in names,
            "nvidia": sorted(n for n in names if n.startswith("nvidia-")),
            "triton": "triton" in names,
            **{n: n in names for n in WATCHED if n != "torch"},
        },
        "largest": [
            {"name": p["name"], "version": p["version"], "mb": round(p["bytes"] / MB, 1)}
            for p in packages[:15]
        ],
        "all": packages,
    }


def install_for_real(installs: list[PipInstall], also: list[str]) -> dict[str, Any]:
    """The command's pip installs in a fresh venv, against the public index, no pip cache."""
    with tempfile.TemporaryDirectory(prefix="install-size-venv-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        started = time.monotonic()
        for number, install in enumerate(installs):
            extra = also if number == 0 else []
            env = newcomer_env(install.env) | {"PIP_NO_CACHE_DIR": "1"}
            cmd = [python, "-m", "pip", "install", "--quiet", *install.args, *extra]
            print(f"[install] {shlex.join(cmd[1:])}", file=sys.stderr, flush=True)
            subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        wall = time.monotonic() - started
        du = subprocess.run(["du", "-sb", str(venv)], capture_output=True, text=True, check=True)
        torch_check = subprocess.run([python, "-c", "import torch"], capture_output=True)
        return {
            "wall_s": round(wall, 1),
            "venv_mb": round(int(du.stdout.split()[0]) / MB, 1),
            "import_torch_fails": torch_check.returncode != 0,
        }


def summary(result: dict[str, Any]) -> str:
    present = result["present"]
    lines = [
        f"{result['platform']}: {result['total_mb']:.0f} MB in {result['packages']} packages "
        f"(torch/NVIDIA/triton {result['torch_nvidia_triton_mb']:.0f} MB; torch "
        f"{'yes' if present['torch'] else 'no'}, NVIDIA wheels {len(present['nvidia'])}, triton "
        f"{'yes' if present['triton'] else 'no'}; "
        + ", ".join(f"{n} {'yes' if present[n] else 'no'}" for n in WATCHED if n != "torch")
        + ")"
    ]
    lines += [f"  {p['mb']:8.1f} MB  {p['name']} {p['version']}" for p in result["largest"]]
    if "fresh_venv" in result:
        venv = result["fresh_venv"]
        lines.append(
            f"  fresh venv: install {venv['wall_s']} s wall, {venv['venv_mb']:.0f} MB installed, "
            f"import torch fails: {venv['import_torch_fails']}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[2:]),
    )
    parser.add_argument("--platform", choices=[*PLATFORMS, "all"], default="all")
    parser.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="REQ",
        help="requirements added to the first pip install (e.g. rapidocr-onnxruntime==1.4.4)",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="also install for real in a fresh venv (Linux): wall time and installed size",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=ROOT / "benchmarks" / "results", metavar="DIR"
    )
    parser.add_argument(
        "--label", default="", help="added to the result file names (e.g. 'before')"
    )
    args = parser.parse_args()
    command = first_command(ROOT / "README.md")
    installs = pip_installs(command)
    platforms = list(PLATFORMS) if args.platform == "all" else [args.platform]
    load = load_average()
    linux = resolve_all("linux", installs, args.also, [])
    sources = source_only(linux)
    for platform in platforms:
        if platform != "linux":
            load = load_average()
        entries = (
            linux if platform == "linux" else resolve_all(platform, installs, args.also, sources)
        )
        result = measure(platform, entries)
        result["source_only"] = [
            f"{e['metadata']['name']} {e['metadata']['version']}" for e in sources
        ]
        if args.install and platform == "linux":
            result["fresh_venv"] = install_for_real(installs, args.also)
        suffix = f"-{args.label}" if args.label else ""
        path = args.results_dir / f"install-size-{platform}{suffix}.json"
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        write_results(
            path,
            load,
            commit=git.stdout.strip(),
            command=command,
            also=args.also,
            how=(
                "PIP_CONFIG_FILE=/dev/null pip install --dry-run --ignore-installed --report "
                "for each pip install of the command; sizes from the index's JSON API"
            ),
            **result,
        )
        print(summary(result), flush=True)
        print(f"  written to {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
