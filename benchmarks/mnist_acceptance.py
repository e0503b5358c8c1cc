"""Acceptance figures of the shipped MNIST SCM at its defaults, written to docs/RESULTS.md.

    python benchmarks/mnist_acceptance.py --model mnist --baseline-model OLD_SCM [--n-null 256] [--n-eff 1000] [--seed 0]

* oracle accuracy on the 10k test images;
* null intervention (abduct, then decode under the factual digit) on the first --n-null test images: mean L1 on
  0–255, and the composition L1 after m = 10 null interventions;
* effectiveness of do(digit = random ≠ factual) on the first --n-eff test images, judged by the oracle, overall
  and per target digit, with reversibility L1 (abduct the counterfactual, decode under the factual digit);
* realism: KID (mean ± subset std) on the oracle's features against held-out ``valid`` images, for the defaults and
  for --baseline-model (an earlier SCM, at N = 20 and its other defaults) on the same images and targets;
* speed: one batch of --speed-batch counterfactuals at the defaults and at the reference setting (75 + 75 of
  100 steps, L = 0.75, s = 1, dynamic normalisation, paper mechanism), timed in the same run.

Generation goes through the evaluation harness and is cached chunk by chunk, so a rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from diffscm.eval.protocols.mnist import FID_REFERENCE, REFERENCE_OPTIONS, _prepare, default_cache, make_method
from diffscm.data import load_mnist
from diffscm.device import pick_device
from diffscm.eval.basics import classify
from diffscm.eval.harness import DiffSCMMethod, EvalProtocol, generate, oracle_features, realism, score
from diffscm.eval.metrics import l1_255
from diffscm.eval.report import md_table, write_section
from diffscm.scm import SCM

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"null_l1": 1.0, "composition_l1_10": 2.0, "effectiveness": 0.98, "per_digit": 0.95, "reversibility": 10.0,
           "speedup": 10.0}


def _timed(method: DiffSCMMethod, x: np.ndarray, d: np.ndarray, targets: np.ndarray, seed: int) -> float:
    t0 = time.perf_counter()
    method.predict(method.abduct(x, d), targets, seed, factual=d)
    return len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--baseline-model", required=True, help="the earlier SCM whose realism at N = 20 is the bar")
    ap.add_argument("--baseline-steps", type=int, default=20)
    ap.add_argument("--n-null", type=int, default=256)
    ap.add_argument("--n-eff", type=int, default=1000)
    ap.add_argument("--speed-batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"))
    args = ap.parse_args()
    if args.n_null > args.n_eff:
        raise SystemExit("--n-null must not exceed --n-eff (the null intervention reuses the same abductions)")

    torch.manual_seed(args.seed)
    dev = pick_device(args.device)
    scm = SCM.from_pretrained(args.model, dev)
    x_test, y_test = load_mnist("test")
    acc = float((classify(scm.oracle, x_test) == y_test).mean())
    print(f"oracle test accuracy {acc:.4f}", flush=True)

    n = args.n_eff
    x_all, y_all, paths, _, scorer = _prepare(scm, "test", n, None, 1000, FID_REFERENCE, judge="oracle")
    x, y = x_all[:n], y_all[:n]
    method = make_method("diffscm", scm, {}, paths)
    proto = EvalProtocol(n=n, split="test", seeds=(args.seed,), comp_m=(1, 10), comp_n=args.n_null)
    gen = generate(method, x, y, proto, cache=default_cache())
    m = score(gen, scorer)
    null_l1 = float(l1_255(x[:args.n_null], gen.comp[1][:args.n_null]).mean())
    comp10 = float(l1_255(x[:args.n_null], gen.comp[10]).mean())
    targets = gen.targets[args.seed]
    hits = classify(scm.oracle, gen.cf[args.seed]) == targets
    per_digit = [float(hits[targets == k].mean()) if (targets == k).any() else float("nan") for k in range(10)]
    print(f"null L1 {null_l1:.3f}, composition m=10 {comp10:.3f}, effectiveness {hits.mean():.4f}", flush=True)

    old = SCM.from_pretrained(args.baseline_model, dev)
    base = DiffSCMMethod(old, old.options(steps=args.baseline_steps, seed=args.seed), "baseline")
    base_gen = generate(base, x, y, EvalProtocol(n=n, split="test", seeds=(args.seed,), comp_m=(1,), comp_n=0,
                                                 phases=("counterfactual",)), cache=default_cache())
    kid_base = realism(scorer.real_features, [oracle_features(scm.oracle, base_gen.cf[args.seed])], args.seed)["kid_oracle"]
    kid_new = m["kid_oracle"]
    base_eff = float((classify(scm.oracle, base_gen.cf[args.seed]) == targets).mean())

    b = args.speed_batch
    xs, ds, ts = x[:b], y[:b], targets[:b]
    ref = make_method("diffscm-reference", scm, {"batch_size": b}, paths)
    fast = DiffSCMMethod(scm, scm.options(batch_size=b, seed=args.seed), "diffscm")
    _timed(fast, xs[:8], ds[:8], ts[:8], args.seed)          # warm-up (allocations, lazy init)
    ips_fast = _timed(fast, xs, ds, ts, args.seed)
    ips_ref = _timed(ref, xs, ds, ts, args.seed)
    speedup = ips_fast / ips_ref
    print(f"speed {ips_fast:.2f} vs reference {ips_ref:.3f} img/s: {speedup:.1f}x", flush=True)

    o = method.opts
    checks = {
        "null_l1": null_l1 <= TARGETS["null_l1"], "composition_l1_10": comp10 <= TARGETS["composition_l1_10"],
        "effectiveness": m["effectiveness"]["mean"] >= TARGETS["effectiveness"],
        "per_digit": float(np.nanmin(per_digit)) >= TARGETS["per_digit"],
        "reversibility": m["reversibility_l1"]["mean"] <= TARGETS["reversibility"],
        "kid": kid_new["mean"] <= kid_base["mean"], "speedup": speedup >= TARGETS["speedup"]}
    result = {
        "oracle_test_accuracy": acc,
        "null": {"n": args.n_null, "l1_255": null_l1, "composition_l1_10": comp10},
        "effectiveness": {"n": n, **m["effectiveness"], "per_target": per_digit},
        "reversibility_l1": m["reversibility_l1"], "cld": m["cld"], "kid_oracle": kid_new,
        "baseline": {"model": str(args.baseline_model), "steps": args.baseline_steps, "kid_oracle": kid_base,
                     "effectiveness": base_eff, "settings": base.settings()},
        "speed": {"batch": b, "images_per_s": ips_fast, "reference_images_per_s": ips_ref, "speedup": speedup,
                  "reference_options": REFERENCE_OPTIONS},
        "checks": checks, "settings": method.settings(), "seed": args.seed, "device": str(dev),
        "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out_json = ROOT / "docs" / "results" / "mnist_acceptance.json"
    out_json.write_text(json.dumps(result, indent=2, default=float) + "\n")

    def ok(key):
        return "✓" if checks[key] else "✗"

    def kid(k):
        return f"{k['mean'] * 1e3:.2f} ± {k['std'] * 1e3:.2f}"

    eff = m["effectiveness"]
    rev = m["reversibility_l1"]
    cmd = (f"python benchmarks/mnist_acceptance.py --model {args.model} --baseline-model OLD_SCM "
           f"--n-null {args.n_null} --n-eff {n} --seed {args.seed}")
    mech = scm.image_mechanism.mechanism(o)
    md = [
        "### MNIST acceptance at the shipped defaults",
        "",
        f"Command: `{cmd}` (device {dev}, {torch.get_num_threads()} threads, {result['date']}). Defaults: {mech} "
        f"mechanism, N = {o.steps}, {o.inversion} inversion (K = {o.inversion_iters}), w = {o.cfg_weights or 1}, "
        f"s = {o.scales if mech == 'paper' else 0}, {o.abduction} abduction, guidance on "
        f"{'the intervened samples only' if o.guidance == 'intervened' else 'every sample'}. Figures on the 0–255 scale; "
        "[bootstrap 95% CI over images]. OLD_SCM is the MNIST SCM this package shipped before the current one "
        f"(diffusion weights fingerprint `{base.settings()['weights']}`): in a clone of the repository, "
        "`git archive $(git log --format=%H -n 2 -- src/diffscm/pretrained/mnist/diffusion | tail -1) "
        "src/diffscm/pretrained/mnist | tar -x -C old` and pass `old/src/diffscm/pretrained/mnist`.",
        "",
        md_table(["figure", "target", "measured", ""], [
            ["oracle accuracy, 10k test images", "—", f"{acc:.4f}", ""],
            [f"null intervention mean L1, {args.n_null} test images", f"≤ {TARGETS['null_l1']}", f"{null_l1:.3f}", ok("null_l1")],
            [f"composition L1 at m = 10, {args.n_null} test images", f"≤ {TARGETS['composition_l1_10']}", f"{comp10:.3f}",
             ok("composition_l1_10")],
            [f"effectiveness of do(digit = random ≠ factual), {n} test images (oracle)", f"≥ {TARGETS['effectiveness']}",
             f"{eff['mean']:.4f} [{eff['ci_low']:.4f}, {eff['ci_high']:.4f}]", ok("effectiveness")],
            ["lowest effectiveness of a target digit", f"≥ {TARGETS['per_digit']}", f"{np.nanmin(per_digit):.3f}", ok("per_digit")],
            ["reversibility L1", f"≤ {TARGETS['reversibility']}", f"{rev['mean']:.2f} [{rev['ci_low']:.2f}, {rev['ci_high']:.2f}]",
             ok("reversibility")],
            ["KID ×10³ (oracle features, real set: held-out valid), mean ± subset std",
             f"≤ earlier model at N = {args.baseline_steps}: {kid(kid_base)}", kid(kid_new), ok("kid")],
            [f"images/s at batch {b}, defaults vs reference setting (same run)", f"≥ {TARGETS['speedup']:g}×",
             f"{ips_fast:.2f} vs {ips_ref:.3f} = {speedup:.1f}×", ok("speedup")],
        ]),
        "",
        "Effectiveness per target digit 0–9: " + ", ".join(f"{v:.3f}" for v in per_digit)
        + f". CLD (0.8/0.2): {m['cld']['mean']:.3f}. The earlier model at N = {args.baseline_steps}: effectiveness "
        f"{base_eff:.3f} on the same images and targets. Raw numbers: `docs/results/mnist_acceptance.json`.",
    ]
    write_section(args.results, "mnist-acceptance", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
