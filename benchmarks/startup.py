"""Cold start of each command: wall time of fresh processes (median of --repeats), beside the floor of importing torch.

    python benchmarks/startup.py [--repeats 5]

The counterfactual row is one MNIST test image with the shipped SCM at its defaults (MNIST cached by `make data`).
Writes the `startup` section of docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffscm.eval.report import md_table, write_section

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("diffscm") or sys.exit("diffscm is not installed in this environment")
    tmp = Path(tempfile.mkdtemp())
    rows = [["`python -c 'import torch'` (the floor)", wall([sys.executable, "-c", "import torch"], args.repeats)]]
    for label, cmd in [
        ("`diffscm --help`", [exe, "--help"]),
        ("`diffscm fit --help`", [exe, "fit", "--help"]),
        ("`diffscm evaluate --help`", [exe, "evaluate", "--help"]),
        ("`diffscm counterfactual` on one MNIST image",
         [exe, "counterfactual", "--model", "mnist", "--index", "0", "--do", "digit=3", "--out", str(tmp / "cf"),
          "--overwrite", "--quiet", "--device", "cpu"]),
    ]:
        rows.append([label, wall(cmd, args.repeats)])
    shutil.rmtree(tmp, ignore_errors=True)
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    md = ["### Cold start of the commands", "",
          f"Command: `python benchmarks/startup.py --repeats {args.repeats}` (median wall time of fresh processes; "
          f"2-core CPU, OMP_NUM_THREADS={threads}, {time.strftime('%Y-%m-%d')}).", "",
          md_table(["command", "seconds"], [[r[0], f"{r[1]:.2f}"] for r in rows]), "",
          "Each command imports only what it runs; the ε-model is our own module with diffusers' UNet2DModel "
          "architecture, so inference imports neither diffusers nor, through it, torch._dynamo and scipy.stats."]
    write_section(ROOT / "docs" / "RESULTS.md", "startup", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
