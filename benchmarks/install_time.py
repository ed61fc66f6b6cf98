"""Install time of the README's first command, as a new user meets it.

    python benchmarks/install_time.py [--public-index] [--json benchmarks/results/install-time.json]

Clones this repository's HEAD into a temporary folder, makes a fresh venv there, and runs the
README's first command (read from the README, so the figure is always the documented command's)
under `/usr/bin/time -v` with `PIP_NO_CACHE_DIR=1`: pip installs everything, then the first chat
ingests the sample documents, prepares the embedded models and answers. Reports wall and CPU
seconds of the install and of the chat separately, with the load average before and after.

--public-index: pip sees PyPI alone, as a newcomer's does (`PIP_CONFIG_FILE=/dev/null` and no
other PIP_* setting but the certificate bundle and timeout): no local wheels, indexes or
constraints that a machine like this one may have.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.evaluation.report import load_average, write_results  # noqa: E402

# With --public-index, the only pip settings kept: how to reach PyPI, not what it offers.
KEPT = ("PIP_NO_CACHE_DIR", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK")


def first_command(readme: Path) -> str:
    """The first ```bash block of the README: the fresh-machine command."""
    match = re.search(r"```bash\n(.+?)\n```", readme.read_text(encoding="utf-8"), re.DOTALL)
    if not match:
        raise SystemExit(f"No ```bash block in {readme}")
    return match.group(1).strip()


def timed(command: str, cwd: Path, env: dict[str, str]) -> dict[str, float | str]:
    """Run `command` in bash under /usr/bin/time -v; its wall, user and system seconds."""
    report = cwd / "time.txt"
    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-v", "-o", str(report), "bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"exit {done.returncode}: {command}")
    fields = dict(
        line.strip().split(": ", 1) for line in report.read_text().splitlines() if ": " in line
    )
    return {
        "wall_s": round(wall, 1),
        "user_s": float(fields["User time (seconds)"]),
        "system_s": float(fields["System time (seconds)"]),
        "cpu_percent": fields["Percent of CPU this job got"],
        "last_output": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "install-time.json"
    )
    parser.add_argument(
        "--public-index", action="store_true", help="pip sees PyPI only, as a newcomer's does"
    )
    args = parser.parse_args()
    command = first_command(ROOT / "README.md")
    install, _, chat = command.rpartition(" && ")  # the chat is last; the installs before it
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="localrag-install-") as tmp:
        clone = Path(tmp) / "localrag"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True)
        env = os.environ | {
            "PIP_NO_CACHE_DIR": "1",
            "VIRTUAL_ENV": str(clone / ".venv"),
            "PATH": f"{clone / '.venv' / 'bin'}:{os.environ['PATH']}",
        }
        for key in ("PYTHONPATH", "CHROMA_DIR", "DOCS_DIR"):
            env.pop(key, None)
        if args.public_index:
            env = {k: v for k, v in env.items() if not k.startswith("PIP_") or k in KEPT}
            env["PIP_CONFIG_FILE"] = os.devnull
        print(f"Installing in {clone} (about 5-25 minutes) ...", file=sys.stderr, flush=True)
        install_run = timed(install, clone, env)
        print(f"Install: {install_run['wall_s']} s. First chat ...", file=sys.stderr, flush=True)
        chat_run = timed(chat, clone, env)
    total = float(install_run["wall_s"]) + float(chat_run["wall_s"])
    write_results(
        args.json,
        load,
        command=command,
        index="PyPI only (PIP_CONFIG_FILE=/dev/null)" if args.public_index else "this pip's own",
        install=install_run,
        first_chat=chat_run,
        total_wall_s=round(total, 1),
        total_cpu_s=round(
            sum(float(r["user_s"]) + float(r["system_s"]) for r in (install_run, chat_run)), 1
        ),
    )
    print(
        f"install {install_run['wall_s']} s + first chat {chat_run['wall_s']} s = "
        f"{total / 60:.1f} min wall; written to {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
