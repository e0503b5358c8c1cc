"""Speed and scale: the fast default, the quality–speed curve, training throughput, peak memory.

    python benchmarks/speed.py select  [--model mnist] [--n 200] [--seed 0]
    python benchmarks/speed.py curve   [--model mnist] [--n 200] [--comp-n 20] [--seed 0] [--batch-size 64]
    python benchmarks/speed.py train   [--steps 30]
    python benchmarks/speed.py memory  [--memory-batch-size 256]
    python benchmarks/speed.py table

``select`` (validation split only): for each candidate grid size N and scale s, effectiveness and CLD of
do(digit = random target ≠ factual) on the first --n `valid` images; the reference setting (75 + 75 steps of
N = 100, L = 0.75, s = 1, dynamic normalisation) on the same images. Rule, fixed before looking: the candidate
with the fewest network passes per image whose effectiveness is ≥ 0.90 and whose CLD (0.8/0.2) is ≤ the
reference's; ties by lower CLD. The chosen (N, L, s) becomes the shipped default (scm.json).

``curve`` (test split): the harness (effectiveness, CLD, composition m = 1 and m = 10) for N ∈ CURVE_STEPS at the
chosen L and s, our defaults and the reference setting, all in one run; images/s timed afresh on one batch after a
warm-up (abduction + guided prediction, nothing else running). ``train``: training images/s of the diffusion
model and the predictor, single-process and 2-process DDP (gloo). ``memory``: peak RSS of a batch-256 counterfactual
run in a fresh process. ``table`` writes docs/RESULTS.md's speed section from the JSON files of the other stages.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
CANDIDATES = {(4, 1.0): [4, 8], (5, 1.0): [2, 4, 5, 6, 8], (6, 1.0): [2, 4, 5, 6, 8], (8, 1.0): [2, 4, 8]}
# s = 5, 6 at N = 5, 6 were added after a first pass (N = 6, s = 4 fell just below the floor).
REFERENCE_IMG_S = 1.0     # the reference implementation on a 2-core CPU: ≈ 61 + 118 ms per step pair, batch 16
FLOOR = 0.90


def _scm(model: str, device: str):
    from diffscm.device import pick_device
    from diffscm.scm import SCM

    return SCM.from_pretrained(model, pick_device(device))


def _write(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f"{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    tmp.replace(RESULTS / f"{name}.json")


def passes(scm, opts) -> int:
    """UNet passes per image: K up and K down (the K predictor gradients of a guided decoding are not counted)."""
    k = len(scm.image_mechanism.grid(opts)) - 1
    return 2 * k


def stage_select(args) -> None:
    from diffscm.eval.protocols.mnist import REFERENCE_OPTIONS, default_cache, run_sweep

    scm = _scm(args.model, args.device)
    cands = []
    runs = [((n, r), scales, {"steps": n, "ratio": r}) for (n, r), scales in CANDIDATES.items()]
    runs.append((("reference",), [1.0], {k: v for k, v in REFERENCE_OPTIONS.items() if k != "scale"}))
    for key, scales, overrides in runs:
        res = run_sweep(scm, "scale", scales, overrides, args.n, args.seed, "valid", None, None, default_cache(),
                        None, progress=False)
        for r in res:
            m, s = r["metrics"], r["settings"]
            cands.append({"reference": key == ("reference",), "steps": s["steps"], "ratio": s["ratio"],
                          "used_steps": s["used_steps"], "scale": r["value"], "dynamic_norm": s["dynamic_norm"],
                          "effectiveness": m["effectiveness"]["mean"], "cld": m["cld"]["mean"],
                          "cld_equal_weights": m["cld_equal_weights"]["mean"], "fid_oracle": m["fid_oracle"]["mean"]})
            print(json.dumps(cands[-1]), flush=True)
    ref = next(c for c in cands if c["reference"])
    ok = [c for c in cands if not c["reference"] and c["effectiveness"] >= FLOOR and c["cld"] <= ref["cld"]]
    chosen = min(ok, key=lambda c: (c["used_steps"], c["cld"])) if ok else None
    _write("speed_select", {"rule": f"fewest steps s.t. effectiveness >= {FLOOR} and CLD <= reference CLD",
                            "n": args.n, "split": "valid", "seed": args.seed, "chosen": chosen, "reference": ref,
                            "candidates": cands})
    print(json.dumps({"chosen": chosen}))


CURVE_STEPS = (4, 5, 6, 8, 10, 20)
REFERENCE_CURVE_STEPS = (20, 50, 100)
PREVIOUS_DEFAULT = {"steps": 50, "ratio": 1.0, "scale": 16.0}   # the defaults shipped before the speed work


def curve_settings(scm) -> list[tuple[str, str, dict]]:
    """(family, label, overrides) of every point of the curve: ours over N at the shipped (L, s), the previous
    default, and the reference setting over N (L = 0.75, s = 1, dynamic normalisation)."""
    from diffscm.eval.protocols.mnist import REFERENCE_OPTIONS

    d = scm.defaults
    out = [("ours", f"N={n}", {"steps": n}) for n in sorted(set(CURVE_STEPS) | {d.steps})]
    out.append(("previous default", "N=50, s=16", dict(PREVIOUS_DEFAULT)))
    out += [("reference", f"N={n}", {**REFERENCE_OPTIONS, "steps": n}) for n in REFERENCE_CURVE_STEPS]
    return out


def stage_curve(args) -> None:
    from diffscm.eval.protocols.mnist import _prepare, default_cache
    from diffscm.eval.harness import DiffSCMMethod, EvalProtocol, generate, score

    scm = _scm(args.model, args.device)
    x_all, y_all, _, _, scorer = _prepare(scm, "test", args.n, None, 1000, 10000)
    proto = EvalProtocol(n=args.n, split="test", seeds=(args.seed,), comp_m=(1, 10), comp_n=args.comp_n,
                         phases=("composition", "counterfactual"))
    rows = []
    for family, label, overrides in curve_settings(scm):
        opts = scm.options(**overrides, batch_size=args.batch_size)
        method = DiffSCMMethod(scm, opts, "diffscm" if family != "reference" else "diffscm-reference")
        gen = generate(method, x_all[: args.n], y_all[: args.n], proto, cache=default_cache(), progress=False)
        m = score(gen, scorer)
        rec = {"family": family, "label": label, "settings": method.settings(), "passes": passes(scm, opts),
               "default": family == "ours" and opts.steps == scm.defaults.steps,
               **{k: m[k]["mean"] for k in ("effectiveness", "cld", "cld_equal_weights", "composition_l1_1",
                                             "composition_l1_10", "fid_oracle")},
               "ci": {k: [m[k]["ci_low"], m[k]["ci_high"]] for k in ("effectiveness", "cld", "composition_l1_1",
                                                                      "composition_l1_10")}}
        rows.append(rec)
        print(json.dumps({k: v for k, v in rec.items() if k != "ci"}, default=float), flush=True)
    _write("speed_curve", {"n": args.n, "comp_n": args.comp_n, "split": "test", "seed": args.seed, "rows": rows})


def _time_counterfactuals(scm, x, y, targets, opts, reps: int = 1) -> float:
    """Seconds per image of abduction + guided prediction of one batch (best of ``reps``, after a warm-up)."""
    obs = {scm.image_name: x, "digit": y}
    scm.counterfactual({scm.image_name: x[:4], "digit": y[:4]}, {"digit": targets[:4]}, opts, progress=False)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        scm.counterfactual(obs, {"digit": targets}, opts, progress=False)
        best = min(best, time.perf_counter() - t0)
    return best / x.shape[0]


def _component_ms(scm, x, y, reps: int = 3) -> dict:
    """ms per call at this batch: one UNet ε (inference mode), one predictor gradient, one full guided step."""
    from diffscm.scm.guidance import GuidanceTerm, classifier_guided

    mech = scm.image_mechanism
    t = torch.full((x.shape[0],), 500)
    eps = mech.eps_fn()
    pred = mech.predictors["digit"]
    guided = classifier_guided(eps, [GuidanceTerm(pred.log_prob, y, 4.0)], mech.alphas_cumprod)

    def grad_only():
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            torch.autograd.grad(pred.log_prob(xg, t, y).sum(), xg)

    unet = mech.diffusion
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def unet_channels_last():
        with torch.inference_mode():
            unet(x_cl, t)

    out = {}
    for name, fn in (("unet_eps", lambda: eps(x, t)), ("predictor_grad", grad_only),
                     ("guided_step", lambda: guided(x, t)), ("unet_eps_channels_last", unet_channels_last)):
        if name == "unet_eps_channels_last":
            unet.to(memory_format=torch.channels_last)
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = 1000 * (time.perf_counter() - t0) / reps
    unet.to(memory_format=torch.contiguous_format)
    return out


def stage_timing(args) -> None:
    """images/s of every curve setting (eager, batch --batch-size, this machine's threads), then for the default:
    per-component costs at batch 16 and 64, batch size and thread sweeps, and torch.compile on/off."""
    from diffscm.data import load_mnist, to_model_range
    from diffscm.eval.basics import random_targets

    scm = _scm(args.model, args.device)
    xs, ys = load_mnist("test")
    bs = args.batch_size
    x, y = to_model_range(xs[:256]).to(scm.device), torch.as_tensor(ys[:256]).to(scm.device)
    targets = torch.as_tensor(random_targets(ys[:256], args.seed)).to(scm.device)
    threads = torch.get_num_threads()
    res = {"device": str(scm.device), "threads": threads, "batch_size": bs, "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"), "settings": []}
    for family, label, overrides in curve_settings(scm):
        opts = scm.options(**overrides, batch_size=bs)
        sec = _time_counterfactuals(scm, x[:bs], y[:bs], targets[:bs], opts, reps=3 if passes(scm, opts) <= 40 else 1)
        res["settings"].append({"family": family, "label": label, "images_per_s": 1 / sec, "passes": passes(scm, opts)})
        print(json.dumps(res["settings"][-1]), flush=True)
    d = scm.options(batch_size=bs)
    res["components_ms"] = {str(b): _component_ms(scm, x[:b], y[:b]) for b in (16, 64)}
    res["batch_sweep"] = {}
    for b in (16, 32, 64, 128, 256):
        res["batch_sweep"][str(b)] = 1 / _time_counterfactuals(scm, x[:b], y[:b], targets[:b], scm.options(batch_size=b),
                                                               reps=2)
    res["thread_sweep"] = {}
    for th in sorted({1, threads}):
        torch.set_num_threads(th)
        res["thread_sweep"][str(th)] = 1 / _time_counterfactuals(scm, x[:bs], y[:bs], targets[:bs], d, reps=2)
    torch.set_num_threads(threads)
    print(json.dumps({k: res[k] for k in ("components_ms", "batch_sweep", "thread_sweep")}), flush=True)
    eager = scm.counterfactual({scm.image_name: x[:bs], "digit": y[:bs]}, {"digit": targets[:bs]}, d, progress=False)
    t0 = time.perf_counter()
    scm.compile()
    _time_counterfactuals(scm, x[:bs], y[:bs], targets[:bs], d)       # first call compiles (batch bs and 4)
    compile_s = time.perf_counter() - t0
    sec = _time_counterfactuals(scm, x[:bs], y[:bs], targets[:bs], d, reps=3)
    comp = scm.counterfactual({scm.image_name: x[:bs], "digit": y[:bs]}, {"digit": targets[:bs]}, d, progress=False)
    res["compile"] = {"images_per_s": 1 / sec, "compile_seconds": compile_s,
                      "max_abs_diff_vs_eager": float((comp[scm.image_name] - eager[scm.image_name]).abs().max())}
    print(json.dumps(res["compile"]), flush=True)
    _write("speed_timing", res)


def stage_memory(args) -> None:
    """Peak RSS of ``diffscm counterfactual`` on 256 test images in one batch of 256, in a fresh process."""
    import resource
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "diffscm.cli", "counterfactual", "--model", args.model, "--index", "0:256",
               "--batch-size", str(args.memory_batch_size), "--do", "digit=random", "--out", f"{tmp}/out", "--quiet"]
        t0 = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if res.returncode:
            raise SystemExit(res.stderr)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {"command": " ".join(["diffscm"] + cmd[3:-3] + ["--out", "OUT"]), "batch_size": args.memory_batch_size,
           "peak_rss_mib": peak_kib / 1024, "wall_s": wall, "summary": json.loads(res.stdout.strip().splitlines()[-1])}
    print(json.dumps(out))
    _write("speed_memory", out)


def _train_ips(cmd: list[str], env: dict) -> float:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    recs = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    return recs[-1]["images_per_s"]


def stage_train(args) -> None:
    """Training images/s of the diffusion model and the predictor: one process (all threads), and data-parallel
    over 2 processes (gloo, one thread each) via torchrun; plus the shipped checkpoints' recorded wall time."""
    import tempfile

    from diffscm.scm import resolve_model

    shipped = resolve_model(args.model)
    rows = []
    for what, bs, extra in (("diffusion", 64, []), ("predictor", 128, ["--diffusion", str(shipped / "diffusion")])):
        rec = json.loads((shipped / what / "training.json").read_text())
        row = {"model": what, "batch_size": bs, "shipped_steps": rec["steps"], "shipped_wall_s": rec["wall_seconds"],
               "shipped_images_per_s": rec["steps"] * rec["train"]["batch_size"] / rec["wall_seconds"]}
        for procs in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                train = ["-m", "diffscm.cli", "train", what, "--out", f"{tmp}/ck", "--steps", str(args.steps),
                         "--batch-size", str(bs), "--save-every", str(10 * args.steps), "--quiet", *extra]
                env = dict(os.environ)
                if procs == 1:
                    cmd = [sys.executable, *train]
                else:
                    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
                           "--master_port=29541", *train]
                    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // procs))
                row[f"images_per_s_{procs}proc"] = _train_ips(cmd, env)
        row["hours_to_shipped_1proc"] = rec["steps"] * rec["train"]["batch_size"] / row["images_per_s_1proc"] / 3600
        rows.append(row)
        print(json.dumps(row), flush=True)
    _write("speed_train", {"steps": args.steps, "rows": rows, "cpus": os.cpu_count()})


def _load(name: str) -> dict | None:
    f = RESULTS / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else None


def stage_table(args) -> None:
    """docs/RESULTS.md's speed section from speed_{select,curve,timing,train,memory}.json."""
    from diffscm.eval.report import md_table, write_section

    sel, curve, timing, train, mem = (_load(n) for n in ("speed_select", "speed_curve", "speed_timing", "speed_train",
                                                          "speed_memory"))
    md = ["### Speed and scale", ""]
    if sel:
        ch, ref = sel["chosen"], sel["reference"]
        md += [f"**Choosing the fast default** (validation split only; `python benchmarks/speed.py select --model "
               f"{args.model} --n {sel['n']} --seed {sel['seed']}`): do(digit = random target ≠ factual) on the first "
               f"{sel['n']} `valid` images. Rule fixed before looking: the fewest steps with effectiveness ≥ {FLOOR} "
               f"and CLD (0.8/0.2) ≤ the reference setting's on the same images (reference: effectiveness "
               f"{ref['effectiveness']:.3f}, CLD {ref['cld']:.3f}). s = 5, 6 at N = 5, 6 were added after a first pass.", "",
               md_table(["N (= steps each way)", "s", "effectiveness ↑", "CLD ↓", "meets the rule"],
                        [[c["steps"], f"{c['scale']:g}", f"{c['effectiveness']:.3f}", f"{c['cld']:.3f}",
                          "✓" if c["effectiveness"] >= FLOOR and c["cld"] <= ref["cld"] else ""]
                         for c in sel["candidates"] if not c["reference"]]), "",
               f"Chosen and shipped in `pretrained/mnist/scm.json`: **N = {ch['steps']}, L = {ch['ratio']:g}, "
               f"s = {ch['scale']:g}**." if ch else "No candidate passed.", ""]
    if curve and timing:
        ips = {(r["family"], r["label"]): r["images_per_s"] for r in timing["settings"]}
        rows = []
        for r in curve["rows"]:
            v = ips.get((r["family"], r["label"]))
            ci = r["ci"]
            rows.append([r["family"], _describe(r["settings"]), r["passes"], f"{v:.2f}" if v else "—",
                         f"{v / REFERENCE_IMG_S:.1f}×" if v else "—",
                         f"{r['effectiveness']:.3f} [{ci['effectiveness'][0]:.3f}, {ci['effectiveness'][1]:.3f}]",
                         f"{r['cld']:.3f} [{ci['cld'][0]:.3f}, {ci['cld'][1]:.3f}]",
                         f"{r['composition_l1_1']:.2f}", f"{r['composition_l1_10']:.2f}", f"{r['fid_oracle']:.1f}"])
        md += ["**Quality–speed curve** (test split; one run: `python benchmarks/speed.py all` = `python "
               f"benchmarks/speed.py curve --model {args.model} --n {curve['n']} --comp-n {curve['comp_n']} --seed "
               f"{curve['seed']}` then `python benchmarks/speed.py timing --batch-size {timing['batch_size']}` "
               f"(then train, memory, table); {timing['date']}, device "
               f"{timing['device']}, {timing['threads']} threads, torch {timing['torch']}). Quality: the harness on the "
               f"first {curve['n']} test images (mean [bootstrap 95% CI]); composition L1 (0–255) of the null "
               f"intervention applied once (all images) and 10 times (first {curve['comp_n']}). Speed: abduction + "
               f"guided prediction of one batch of {timing['batch_size']} after a warm-up, eager mode. "
               f"'× ref.' divides by the reference implementation's ≈ {REFERENCE_IMG_S:g} image/s on a 2-core CPU "
               "(reported for the reference code: 61 ms per inversion step and 118 ms per guided step at batch 16, 75 + 75 steps).", "",
               md_table(["family", "setting", "network passes / image", "images/s ↑", "× ref.", "effectiveness ↑",
                         "CLD (0.8/0.2) ↓", "composition L1 m=1 ↓", "composition L1 m=10 ↓", "FID (oracle) ↓"], rows), ""]
        md += _acceptance(curve, timing)
        keep = [r for r in curve["rows"] if r.get("default") or r["family"] == "previous default"
                or (r["family"] == "ours" and r["settings"]["steps"] == 20)
                or (r["family"] == "reference" and r["settings"]["steps"] == 100)]
        readme = [f"Measured with `python benchmarks/speed.py curve --n {curve['n']} --seed {curve['seed']}` and "
                  f"`python benchmarks/speed.py timing` ({timing['date']}, 2-core CPU, batch {timing['batch_size']}, "
                  f"first {curve['n']} test images):", "",
                  md_table(["setting", "images/s", "× reference (≈ 1 img/s)", "effectiveness ↑", "CLD ↓",
                            "composition L1 m=1 ↓", "FID (oracle) ↓"],
                           [[("**default** " if r.get("default") else r["family"] + " ") + _describe(r["settings"]),
                             f"{ips[(r['family'], r['label'])]:.2f}", f"{ips[(r['family'], r['label'])] / REFERENCE_IMG_S:.1f}×",
                             f"{r['effectiveness']:.3f}", f"{r['cld']:.3f}", f"{r['composition_l1_1']:.2f}",
                             f"{r['fid_oracle']:.1f}"] for r in keep])]
        write_section(ROOT / "README.md", "speed-readme", "\n".join(readme))
    if timing:
        comp = timing["components_ms"]
        md += ["**Where the time goes** (same run; ms per call, eager):", "",
               md_table(["batch", "UNet ε (inference mode)", "UNet ε, channels-last", "predictor ∇x log p",
                         "guided step (ε + ∇)"],
                        [[b, f"{c['unet_eps']:.0f}", f"{c['unet_eps_channels_last']:.0f}", f"{c['predictor_grad']:.0f}",
                          f"{c['guided_step']:.0f}"] for b, c in comp.items()]), "",
               "The reference implementation: 61 ms per inversion step and 118 ms per guided step at batch 16.", "",
               "Default setting, images/s against batch size: " + ", ".join(
                   f"{b}: {v:.2f}" for b, v in timing["batch_sweep"].items()) + "; against threads (batch "
               f"{timing['batch_size']}): " + ", ".join(f"{t}: {v:.2f}" for t, v in timing["thread_sweep"].items())
               + f". `torch.compile` (`diffscm counterfactual --compile`): {timing['compile']['images_per_s']:.2f} "
               f"images/s after {timing['compile']['compile_seconds']:.0f} s of compilation, max |Δ| vs eager "
               f"{timing['compile']['max_abs_diff_vs_eager']:.1e} on [-1, 1].", ""]
    if train:
        md += [f"**Training throughput** (`python benchmarks/speed.py train --steps {train['steps']}`; images/s over "
               f"{train['steps']} steps including the first; 2 processes = `torchrun --nproc_per_node 2` over gloo, "
               f"one thread each, on the same {train['cpus']} cores):", "",
               md_table(["model", "batch", "images/s, 1 process", "images/s, 2 processes (DDP)", "shipped steps",
                         "shipped run: recorded wall time", "time to shipped quality at 1-process speed"],
                        [[r["model"], r["batch_size"], f"{r['images_per_s_1proc']:.0f}", f"{r['images_per_s_2proc']:.0f}",
                          r["shipped_steps"], f"{r['shipped_wall_s'] / 3600:.2f} h ({r['shipped_images_per_s']:.0f} img/s)",
                          f"{r['hours_to_shipped_1proc']:.2f} h"] for r in train["rows"]]), ""]
    if mem:
        md += [f"**Peak memory**: `{mem['command']}` — peak RSS {mem['peak_rss_mib']:.0f} MiB "
               f"(`python benchmarks/speed.py memory --memory-batch-size {mem['batch_size']}`; {mem['wall_s']:.0f} s "
               f"wall including start-up).", ""]
    md += ["GPU: this task had no GPU machine, so no GPU, bf16 or multi-GPU numbers are recorded here."]
    write_section(ROOT / "docs" / "RESULTS.md", "speed", "\n".join(md))
    print("wrote the speed section")


def _describe(s: dict) -> str:
    sc = ", ".join(f"s={v:g}" for v in s["scales"].values()) or "s=0"
    dn = ", dyn. norm" if s["dynamic_norm"] else ""
    return f"{s['used_steps']}+{s['used_steps']} of N={s['steps']}, L={s['ratio']:g}, {sc}{dn}"


def _acceptance(curve: dict, timing: dict) -> list[str]:
    ips = {(r["family"], r["label"]): r["images_per_s"] for r in timing["settings"]}
    ref = next(r for r in curve["rows"] if r["family"] == "reference" and r["settings"]["steps"] == 100)
    default = [r for r in curve["rows"] if r["family"] == "ours" and r.get("default")]
    if not default:
        return []
    d = default[0]
    v = ips[(d["family"], d["label"])]
    ok = v >= 10 * REFERENCE_IMG_S and d["effectiveness"] >= ref["effectiveness"] and d["cld"] <= ref["cld"]
    return [f"**Acceptance** — our default ({_describe(d['settings'])}): {v:.2f} images/s = "
            f"{v / REFERENCE_IMG_S:.1f}× the reference's ≈ {REFERENCE_IMG_S:g} image/s "
            f"(and {v / ips[(ref['family'], ref['label'])]:.1f}× our own run of the reference setting), effectiveness "
            f"{d['effectiveness']:.3f} vs {ref['effectiveness']:.3f}, CLD {d['cld']:.3f} vs {ref['cld']:.3f}: "
            + ("**met**." if ok else "**not met**."), ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["select", "curve", "timing", "train", "memory", "table", "all"])
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--comp-n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--memory-batch-size", type=int, default=256)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    stages = ["curve", "timing", "train", "memory", "table"] if args.stage == "all" else [args.stage]
    for st in stages:
        globals()[f"stage_{st}"](args)


if __name__ == "__main__":
    main()
