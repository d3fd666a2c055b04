"""Run time of every notebook in quick mode (what CI pays) or full mode, executed headless as nbval
would.

    python benchmarks/notebooks.py               # quick mode, all notebooks/NN_*.ipynb
    python benchmarks/notebooks.py 01 03         # quick mode, some of them
    python benchmarks/notebooks.py --full        # full mode (no CRATE_EDU_QUICK), all of them
    python benchmarks/notebooks.py --full 09     # full mode, one of them
    python benchmarks/notebooks.py --full --save /tmp/full 04   # also keep the executed notebook

Prints and writes ``benchmarks/results/notebooks_quick.json`` or ``notebooks_full.json`` (with
notebook names given, the rows are merged into the existing file, so notebooks can be measured in
several runs). Per notebook:

- ``seconds``: wall time, kernel start included;
- ``kernel_cpu_seconds``: CPU time (user + system) of the kernel process and the children it
  waited for, read by a cell appended to the notebook (kernel start included). On a shared
  machine this is the steadier figure: other jobs stretch the wall time, not the CPU time;
- ``others_cpu_busy``: how loaded the machine was by everything else, as the mean number of cores
  busy outside the kernel and this script (from ``/proc/stat``; 0 on an idle machine, up to
  ``cpu_count``), and ``loadavg_1min`` at the start and end of the notebook;
- ``longest_cells``: the three longest cells (wall seconds, from the kernel's execution
  timestamps), by index among all cells and first code line: where a notebook spends its time,
  which the notebooks' notes before a long cell quote.

Full mode on 2 CPU cores took 21 min for all nine on 2026-12-03 (09, the longest, 5.3 min).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]

#: Appended to each notebook: prints the kernel's CPU seconds (user + system, self + children).
CPU_CELL = (
    "import json as _j, os as _o\n"
    "_t = _o.times()\n"
    "print('KERNEL_CPU', _j.dumps(_t.user + _t.system + _t.children_user + _t.children_system))"
)


def machine_busy_seconds() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this script (the nbclient side of the run), for subtracting from the machine's."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def longest_cells(nb, n: int = 3) -> list[dict]:
    """The ``n`` longest code cells of an executed notebook: index, first code line, wall seconds."""
    cells = []
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if (
            cell.cell_type != "code"
            or "iopub.execute_input" not in timing
            or "shell.execute_reply" not in timing
        ):
            continue
        start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
        lines = [x for x in cell.source.splitlines() if x.strip() and not x.lstrip().startswith("#")]
        cells.append(
            {"cell": index, "first_line": (lines or [""])[0][:80], "seconds": (end - start).total_seconds()}
        )
    cells.sort(key=lambda c: -c["seconds"])
    return [{**c, "seconds": round(c["seconds"], 1)} for c in cells[:n]]


def run_one(path: Path, timeout: int, save: Path | None = None) -> dict:
    """Execute one notebook; its wall time, kernel CPU time and the machine's load meanwhile
    (and, with ``save``, the executed notebook written there, to read what full mode prints)."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CPU_CELL))
    load0 = os.getloadavg()[0]
    busy0, own0 = machine_busy_seconds(), own_cpu_seconds()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as sockets:
        # IPC sockets in a folder of their own: kernels started at the same time by other jobs
        # cannot take this kernel's TCP ports
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
        resources = {"metadata": {"path": str(path.parent)}}
        try:
            NotebookClient(nb, km=km, timeout=timeout, resources=resources).execute()
        finally:  # a kernel manager passed in is ours to stop
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    seconds = time.perf_counter() - t0
    busy1, own1 = machine_busy_seconds(), own_cpu_seconds()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    kernel_cpu = float(text.split("KERNEL_CPU", 1)[1].strip())
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save / path.name)
    row = {
        "notebook": path.name,
        "seconds": round(seconds, 1),
        "kernel_cpu_seconds": round(kernel_cpu, 1),
        "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "longest_cells": longest_cells(nb),
    }
    if busy0 is not None and busy1 is not None:
        others = (busy1 - busy0) - kernel_cpu - (own1 - own0)
        row["others_cpu_busy"] = round(max(others, 0.0) / seconds, 2)
    return row


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes, e.g. 01 09 (default: all)")
    parser.add_argument("--full", action="store_true", help="full mode (CRATE_EDU_QUICK unset)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    parser.add_argument("--save", type=Path, help="a folder to write the executed notebooks to")
    args = parser.parse_args(argv)
    if args.full:
        os.environ.pop("CRATE_EDU_QUICK", None)
    else:
        os.environ["CRATE_EDU_QUICK"] = "1"
    mode = "full" if args.full else "quick"
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.prefixes:
        paths = [p for p in paths if any(p.name.startswith(a) for a in args.prefixes)]
    out = ROOT / "benchmarks" / "results" / f"notebooks_{mode}.json"
    rows: dict[str, dict] = {}
    if args.prefixes and out.exists():  # measuring some notebooks: keep the others' rows
        rows = {r["notebook"]: r for r in json.loads(out.read_text())["results"]}
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for path in paths:
        row = {**run_one(path, args.timeout, args.save), "date": date}
        rows[path.name] = row
        print(
            f"{path.name:<40} {row['seconds']:7.1f} s wall, {row['kernel_cpu_seconds']:7.1f} s kernel CPU, "
            f"others busy {row.get('others_cpu_busy', float('nan')):.2f} cores",
            flush=True,
        )
        out.write_text(  # after every notebook, so a long run leaves what it measured
            json.dumps(
                {
                    "mode": mode,
                    "date": date,
                    "machine": {
                        "cpu_count": os.cpu_count(),
                        "python": platform.python_version(),
                        "processor": platform.processor() or platform.machine(),
                    },
                    "results": [rows[k] for k in sorted(rows)],
                },
                indent=2,
            )
            + "\n"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
