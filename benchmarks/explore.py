"""The explorer: slider-move latency through the real server, and the README's screenshots.

    python benchmarks/explore.py latency [--models mnist,morphomnist --images 10 --moves 20 --seed 0]
    python benchmarks/explore.py screenshots                                 # docs/figures/explore/*.png

latency (the explore-latency section of docs/RESULTS.md) starts `diffscm explore` in its own process and times, from
a client, every request of a user who picks an image (the first request abducts it) and then moves the controls. screenshots drives Debian's headless chromium (selenium + chromium-driver) over the three shipped models.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from diffscm.eval.report import md_table, write_section

ROOT = Path(__file__).resolve().parents[1]


def post(url: str, body: dict) -> tuple[float, dict]:
    req = urllib.request.Request(url + "/api/counterfactual", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        out = json.loads(r.read())
    return time.perf_counter() - t0, out


def move(model: str, rng: random.Random, m: int) -> dict:
    """One control move of a user: a new do() value and, every other move, a new weight."""
    if model == "mnist":
        body = {"do": {"digit": rng.randrange(10)}}
        if m % 2:
            body["options"] = {"w": round(rng.uniform(1, 4), 1)}                   # the w slider
    else:
        body = {"do": {"thickness": round(rng.uniform(1, 6), 2)}}                  # the thickness slider
        if m % 2:
            body["do"]["intensity"] = round(rng.uniform(80, 250), 1)             # a joint intervention
    return body


def measure(model: str, args) -> tuple[list[float], list[float], list[float]]:
    cmd = [sys.executable, "-c", "from diffscm.cli import main; main()", "explore", "--model", model,
           "--n-images", str(args.images), "--port", "0", "--device", "cpu"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = p.stdout.readline().split()[3].rstrip("/")
        rng = random.Random(args.seed)
        first, moves, server = [], [], []
        for i in range(args.images):
            dt, r = post(url, {"index": i, "do": {}})
            first.append(dt)
            assert not r["cached_abduction"]
            for m in range(args.moves):
                dt, r = post(url, {"index": i, **move(model, rng, m)})
                assert r["cached_abduction"], "a slider move abducted again"
                moves.append(dt)
                server.append(r["seconds"])
    finally:
        p.terminate()
        p.wait(30)
    return first, moves, server


def latency(args) -> None:
    q = lambda xs, k: float(np.percentile(xs, k))  # noqa: E731
    rows, verdict = [], ""
    for model in args.models.split(","):
        first, moves, server = measure(model, args)
        rows += [[model, "control move (cached latent: one decoding)", len(moves), f"{q(moves, 50):.3f}",
                  f"{q(moves, 95):.3f}", f"{max(moves):.3f}", f"{statistics.median(server):.3f}"],
                 [model, "new image (abduction + decoding)", len(first), f"{q(first, 50):.3f}", f"{q(first, 95):.3f}",
                  f"{max(first):.3f}", "—"]]
        if model == "mnist":
            verdict = "met" if q(moves, 50) <= 1 and q(moves, 95) <= 2 else "NOT met"
    md = ["### Explorer latency", "",
          f"Command: `python benchmarks/explore.py latency --models {args.models} --images {args.images} --moves "
          f"{args.moves} --seed {args.seed}` ({time.strftime('%Y-%m-%d')}, 2-core CPU, nothing else running). "
          "`diffscm explore --model NAME` runs in its own process at the shipped model's defaults; a client on the "
          f"same machine picks each of the first {args.images} test images and makes {args.moves} moves on it "
          "(MNIST: a random do(digit), and on every other move a random w in [1, 4]; Morpho-MNIST: a random "
          "do(thickness) in [1, 6], and on every other move do(intensity) as well). Times are wall seconds seen by "
          "the client, HTTP and PNG encoding included.", "",
          md_table(["model", "request", "n", "p50 s", "p95 s", "max s", "server-side p50 s"], rows), "",
          f"Target for an MNIST slider move: p50 ≤ 1 s and p95 ≤ 2 s — {verdict}."]
    write_section(ROOT / "docs" / "RESULTS.md", "explore-latency", "\n".join(md))
    print("\n".join(md))


def screenshots(args) -> None:
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from diffscm.scm.core import SCM
    from diffscm.service.explorer import Explorer
    from diffscm.service.server import running

    out = ROOT / "docs" / "figures" / "explore"
    out.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,820", "--hide-scrollbars"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)

    def done(d, seq):
        cf = d.find_element(By.ID, "cf")
        return cf.get_attribute("data-seq") not in (None, seq) and "computing" not in d.find_element(By.ID, "status").text

    try:
        for name, pick, act in [
            ("mnist", 0, lambda d: Select(d.find_element(By.ID, "do-digit")).select_by_value("3")),
            ("morphomnist", 2, lambda d: (d.find_element(By.ID, "do-thickness").click(),
                                          d.find_element(By.ID, "do-thickness").send_keys(*[Keys.ARROW_RIGHT] * 60))),
            ("lesion-mnist", None, lambda d: d.find_element(By.ID, "healthy").click()),
        ]:
            ex = Explorer(SCM.from_pretrained(name), n_images=32)
            if pick is None:    # the first image with a lesion
                pick = next(f.index for f in ex.images if f.values.get("lesion") == 1)
            with running(ex) as url:
                driver.get(url + "/")
                wait = WebDriverWait(driver, 300)
                wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
                driver.find_elements(By.CSS_SELECTOR, "#thumbs img")[pick].click()
                wait.until(lambda d: done(d, None))
                seq = driver.find_element(By.ID, "cf").get_attribute("data-seq")
                act(driver)
                wait.until(lambda d: done(d, seq))
                time.sleep(0.3)
                driver.save_screenshot(str(out / f"{name}.png"))
                print("wrote", out / f"{name}.png")
            ex.close()
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--models", default="mnist,morphomnist")
    lat.add_argument("--images", type=int, default=10)
    lat.add_argument("--moves", type=int, default=20)
    lat.add_argument("--seed", type=int, default=0)
    sub.add_parser("screenshots")
    args = ap.parse_args()
    {"latency": latency, "screenshots": screenshots}[args.cmd](args)


if __name__ == "__main__":
    main()
