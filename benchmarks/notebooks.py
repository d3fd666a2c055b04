"""Quick-mode run time of every notebook (what CI pays), executed headless as nbval would.

    python benchmarks/notebooks.py            # all notebooks/NN_*.ipynb
    python benchmarks/notebooks.py 01 03      # some of them

Prints and writes ``benchmarks/results/notebooks_quick.json``: wall seconds per notebook,
kernel start included, with ``CRATE_EDU_QUICK=1``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    os.environ["CRATE_EDU_QUICK"] = "1"
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if argv:
        paths = [p for p in paths if any(p.name.startswith(a) for a in argv)]
    rows = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
        seconds = time.perf_counter() - t0
        rows.append({"notebook": path.name, "seconds": round(seconds, 1)})
        print(f"{path.name:<40} {seconds:6.1f} s")
    out = ROOT / "benchmarks" / "results" / "notebooks_quick.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
