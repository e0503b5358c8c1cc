"""One ImageNet counterfactual with the full-size guided-diffusion architecture, timed, into docs/RESULTS.md.

    python benchmarks/adm_256.py [--preset imagenet-256-cond] [--device cpu] [--seed 0] [--write]

The published checkpoints cannot be downloaded here, so the model and classifier of ``--preset`` are instantiated
with random weights (PyTorch's default initialisation, seeded): the cost of a counterfactual depends on the
architecture and the settings, not on the weights. It times abduction + do(class) prediction of one 256×256 image at
the SCM's defaults (Diff-SCM's N = 100 DDIM steps and L = 0.75, exact inversion, the preset's classifier scale on the
intervened sample), and reports the peak memory: the process's maximum resident set on CPU, the allocator's peak on
CUDA (where ``--bf16`` runs both networks under bfloat16 autocast).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffscm.data import to_model_range
from diffscm.models import adm
from diffscm.scm import SCM, CausalGraph
from diffscm.scm.mechanisms import DiffusionImageMechanism, InferenceOptions
from diffscm.scm.packaging import adm_defaults, imagenet_class_names

ROOT = Path(__file__).resolve().parents[1]


def photo_like(size: int, seed: int) -> np.ndarray:
    """A smooth RGB test image (low-frequency colour fields plus mild noise), uint8 3×S×S."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy + rng.random()))
                    for _ in range(3)])
    img += 0.03 * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="imagenet-256-cond", choices=list(adm.PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="N (default: the SCM's)")
    ap.add_argument("--target", default="golden_retriever")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="write the docs/RESULTS.md section")
    args = ap.parse_args()

    flags = adm.parse_flags(adm.PRESETS[args.preset])
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    from diffscm.models import DiffusionModel

    model = DiffusionModel(adm.diffusion_config(flags)).eval()
    clf = adm.ADMClassifier(adm.classifier_config(flags)).eval()
    for m in (model, clf):
        m.requires_grad_(False)
    build_s = time.perf_counter() - t0
    names = imagenet_class_names()
    graph = CausalGraph.from_dict({"variables": [
        {"name": "class", "kind": "categorical", "num_classes": 1000, "parents": [], "categories": names},
        {"name": "image", "kind": "image", "parents": ["class"]}]})
    dev = torch.device(args.device)
    model, clf = model.to(dev), clf.to(dev)
    mech = DiffusionImageMechanism(model, {"class": clf}, condition="class" if model.num_classes else None)
    defaults = adm_defaults(flags, guided=True)
    if args.steps:
        defaults["steps"] = args.steps
    opts = InferenceOptions(**{**defaults, "batch_size": 1, "seed": args.seed})
    scm = SCM(graph, mech, defaults=opts)
    target = graph.variables["class"].class_index(args.target)
    x = to_model_range(photo_like(flags["image_size"], args.seed)[None])
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if args.bf16 else torch.autocast(dev.type, enabled=False)
    t0 = time.perf_counter()
    with ctx:
        res = scm.counterfactual({"image": x, "class": torch.tensor([281])}, {"class": torch.tensor([target])}, opts,
                                 progress=sys.stderr.isatty())
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    assert torch.isfinite(res["image"]).all()
    k = len(mech.grid(opts)) - 1
    peak = (torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    out = {"preset": args.preset, "device": str(dev), "bf16": args.bf16, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(),
           "diffusion_params_M": round(adm.count_parameters(model) / 1e6, 1),
           "classifier_params_M": round(adm.count_parameters(clf) / 1e6, 1), "build_s": round(build_s, 1),
           "steps": opts.steps, "ratio": opts.ratio, "grid_steps": k, "scale": opts.scales["class"],
           "inversion": opts.inversion, "seconds": round(seconds, 1), "seconds_per_step": round(seconds / (2 * k), 2),
           "peak_memory_GiB": round(peak, 2), "peak_memory_kind": "cuda allocator" if dev.type == "cuda" else "max RSS"}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.write:
        from diffscm.eval.report import write_section
        from diffscm.markdown import md_table

        cmd = "python benchmarks/adm_256.py --preset {p} --device {d}{b} --seed {s} --write".format(
            p=args.preset, d=args.device, b=" --bf16" if args.bf16 else "", s=args.seed)
        rows = [[out["preset"], f"{out['diffusion_params_M']} M + {out['classifier_params_M']} M",
                 f"N = {out['steps']}, L = {out['ratio']} ({k} steps each way), s = {out['scale']}, {out['inversion']}",
                 f"{out['seconds']:.0f} s", f"{out['seconds_per_step']:.2f} s", f"{out['peak_memory_GiB']:.1f} GiB "
                 f"({out['peak_memory_kind']})", f"{out['device']}{' bf16' if args.bf16 else ''}, "
                 f"{out['threads']} threads"]]
        size = flags["image_size"]
        md = "\n".join([f"### ImageNet {size}×{size} with the guided-diffusion architecture"
                        + (" (bf16)" if args.bf16 else ""), "",
                        f"Command: `{cmd}`", "",
                        f"The published `{args.preset}` diffusion model and classifier, instantiated from the preset's "
                        "flags with random weights (the checkpoints cannot be downloaded here; time and memory depend "
                        "on the architecture and settings, not on the weights). One counterfactual: abduction of one "
                        f"{size}×{size} image (exact inversion: one fixed-point iteration per step) and its "
                        "do(class = golden retriever) prediction with classifier guidance, at the converted SCM's "
                        "defaults.", "",
                        md_table(["model", "parameters", "settings", "one counterfactual", "per step", "peak memory",
                                  "device"], rows)])
        key = f"adm-{args.preset}-{dev.type}{'-bf16' if args.bf16 else ''}"
        write_section(ROOT / "docs" / "RESULTS.md", key, md)


if __name__ == "__main__":
    main()
