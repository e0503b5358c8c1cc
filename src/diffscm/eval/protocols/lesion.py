"""Lesion-localisation benchmark: four ways to a healthy image, scored against known lesion masks.

Methods (all produce x_h, the anomaly map is |x − x_h|):

* ``implicit``   — Diff-SCM counterfactual do(lesion = 0) with classifier-free guidance (w) and dynamic
  normalisation, abducted with the null label (DDIM inversion to L·T);
* ``classifier`` — the same latent decoded with the ∅ branch of the same ε-model plus anti-causal classifier
  guidance (s) from the noise-aware lesion classifier (Diff-SCM core);
* ``anoddpm``    — a diffusion model trained on healthy images only: x is forward-noised to L·T (seeded) and
  decoded without guidance (AnoDDPM-style);
* ``vae``        — reconstruction by a VAE trained on healthy images only.

Protocol per seed (a Lesion-MNIST draw with its own digits): the Dice threshold is chosen on the validation
split and applied to the test split; AUPRC (pixels) and AUROC (images) need no threshold. Seeds give the
spread: mean and a t-interval over seeds.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ...data.folder import FolderDataset, load_folder
from ...errors import DiffSCMError
from ...distributed import Topology
from ..harness import cached_chunks
from ..localize import anomaly_map, healthy_counterfactual, noised_reconstruction, vae_reconstruction
from ...scm.mechanisms import InferenceOptions
from ..metrics.localization import auroc, average_precision, best_threshold, image_scores, mean_dice
from ...models import VAE, DiffusionModel
from ...models.io import weights_key
from ...scm.core import SCM
from ...files import atomic_write_dir, write_text_atomic
from ...schedule import ddim_grid
from ..report import md_table

METHODS = ("implicit", "classifier", "anoddpm", "vae")
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass
class LocalizationProtocol:
    """Settings of the benchmark; every diffusion method uses the same grid (``steps``, ``ratio``)."""

    steps: int = 100
    ratio: float = 0.75
    w: float = 3.0                 # implicit guidance scale
    classifier_scale: float = 10.0  # anti-causal guidance scale of the ``classifier`` method
    anoddpm_ratio: float | None = None   # L of the ``anoddpm`` baseline (default: ``ratio``), tuned on its own
    dynamic_norm: bool = True
    reduce: str = "mean"
    sigma: float = 0.0
    top: int = 10                  # image score: mean of the map's top pixels
    n_val: int = 200
    n_test: int = 400
    batch_size: int = 100
    chunk: int = 100

    @classmethod
    def from_scm(cls, scm: SCM, label: str, **overrides) -> "LocalizationProtocol":
        """The SCM's default inference options as a protocol, with ``overrides`` (``None`` values ignored)."""
        d = scm.defaults
        proto = cls(steps=d.steps, ratio=d.ratio, w=d.cfg_scale or 3.0, dynamic_norm=d.dynamic_norm,
                    classifier_scale=d.scales.get(label, 0.0) or 10.0, batch_size=d.batch_size)
        return replace(proto, **{k: v for k, v in overrides.items() if v is not None})

    def options(self, **kw) -> InferenceOptions:
        d = {"steps": self.steps, "ratio": self.ratio, "dynamic_norm": self.dynamic_norm, "clip": False,
             "batch_size": self.batch_size, **kw}
        return InferenceOptions(**d)


@dataclass
class LocalizationModels:
    scm: SCM
    healthy: DiffusionModel | None
    vae: VAE | None

    @classmethod
    def from_scm(cls, scm: SCM) -> "LocalizationModels":
        """The SCM plus its ``evaluation`` models ``healthy-diffusion`` and ``vae`` (if listed in scm.json)."""
        cfg = json.loads((scm.path / "scm.json").read_text()) if scm.path else {}
        ev = cfg.get("evaluation") or {}
        healthy = DiffusionModel.from_pretrained(scm.path / ev["healthy-diffusion"], scm.device) \
            if "healthy-diffusion" in ev else None
        vae = VAE.from_pretrained(scm.path / ev["vae"], scm.device) if "vae" in ev else None
        return cls(scm, healthy, vae)

    @property
    def label(self) -> str:
        mech = self.scm.image_mechanism
        return mech.condition or next(iter(mech.predictors))


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def method_settings(method: str, proto: LocalizationProtocol) -> dict:
    """The settings a method's output depends on (its cache key)."""
    if method == "implicit":
        return {"steps": proto.steps, "ratio": proto.ratio, "w": proto.w, "dn": proto.dynamic_norm}
    if method == "classifier":
        return {"steps": proto.steps, "ratio": proto.ratio, "s": proto.classifier_scale, "dn": proto.dynamic_norm}
    if method == "anoddpm":
        return {"steps": proto.steps, "ratio": proto.anoddpm_ratio or proto.ratio, "dn": proto.dynamic_norm}
    if method == "vae":
        return {}
    raise DiffSCMError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")


def healthy_images(models: LocalizationModels, method: str, ds: FolderDataset, proto: LocalizationProtocol,
                   seed: int, cache: Path | None, tag: str, progress: bool = True,
                   top: Topology | None = None) -> np.ndarray:
    """x_h (N×C×H×W float32 in [0, 1]) of every image of ``ds`` by ``method``, cached chunk by chunk (shared over
    the ranks of a multi-process ``top``)."""
    mech = models.scm.image_mechanism
    dev = models.scm.device
    data_key = hashlib.sha256(ds.images.tobytes()).hexdigest()[:12]
    settings = method_settings(method, proto)
    if method in ("implicit", "classifier") and not (mech.condition or mech.predictors):
        raise DiffSCMError("the SCM cannot guide towards healthy")
    if method == "anoddpm" and models.healthy is None:
        raise DiffSCMError("method anoddpm needs a healthy-only diffusion model (evaluation 'healthy-diffusion')")
    if method == "vae" and models.vae is None:
        raise DiffSCMError("method vae needs a VAE trained on healthy images (evaluation 'vae')")
    x_all = torch.as_tensor(ds.images) * 2 - 1
    opts_inv = proto.options()

    def latent(sl: slice, start: int) -> dict:
        return {"u": mech.abduct(x_all[sl].to(dev), opts_inv).cpu().numpy()}

    lat_parts = None
    if method in ("implicit", "classifier"):
        folder = None
        if cache is not None:
            folder = cache / f"latent-{weights_key(mech.diffusion)}-{data_key}-{_key(proto.steps, proto.ratio)}"
            folder.mkdir(parents=True, exist_ok=True)
        lat_parts = cached_chunks(folder, len(ds), proto.chunk, latent, f"{tag} abduction", progress, top)

    def run(sl: slice, start: int) -> dict:
        x = x_all[sl].to(dev)
        if method == "vae":
            out = vae_reconstruction(models.vae, x)
        elif method == "anoddpm":
            gen = torch.Generator(device=dev).manual_seed(seed * 100003 + start)
            out = noised_reconstruction(models.healthy, x, proto.options(ratio=proto.anoddpm_ratio or proto.ratio), gen)
        else:
            u = torch.as_tensor(lat_parts[start // proto.chunk]["u"]).to(dev)
            opts = proto.options(cfg_scale=proto.w) if method == "implicit" else \
                proto.options(scales={models.label: proto.classifier_scale})
            out = healthy_counterfactual(mech, x, 0, opts, latent=u)
        return {"x": ((out.cpu().float() + 1) / 2).numpy()}

    folder = None
    if cache is not None:
        wkey = weights_key(models.vae if method == "vae" else models.healthy if method == "anoddpm" else mech.diffusion)
        folder = cache / f"{method}-{wkey}-{data_key}-{_key(settings, seed if method == 'anoddpm' else 0)}"
        folder.mkdir(parents=True, exist_ok=True)
    parts = cached_chunks(folder, len(ds), proto.chunk, run, f"{tag} {method}", progress, top)
    return np.concatenate([p["x"] for p in parts])


def maps_of(ds: FolderDataset, x_h: np.ndarray, proto: LocalizationProtocol) -> np.ndarray:
    return anomaly_map(ds.images, x_h, proto.reduce, proto.sigma)


def score_maps(val_maps, val: FolderDataset, test_maps, test: FolderDataset, label: str, top: int) -> dict:
    """Threshold on val (max mean Dice), then test Dice, pixel AUPRC and image AUROC."""
    tau, val_dice = best_threshold(val_maps, val.masks)
    return {"threshold": tau, "val_dice": val_dice,
            "dice": mean_dice(test_maps, test.masks, tau),
            "auprc": average_precision(test_maps, test.masks),
            "auroc": auroc(image_scores(test_maps, top), test.table[label])}


def subset(ds: FolderDataset, n: int) -> FolderDataset:
    """The first ``n`` rows of a dataset."""
    n = min(n, len(ds))
    return FolderDataset(ds.root, ds.files[:n], ds.images[:n], {k: v[:n] for k, v in ds.table.items()},
                         None if ds.masks is None else ds.masks[:n], ds.info)


def load_benchmark_split(root: Path, split: str, n: int, label: str) -> FolderDataset:
    ds = subset(load_folder(root, split=split, label=label), n)
    if ds.masks is None:
        raise DiffSCMError(f"{root} has no masks/ folder: localisation needs ground-truth masks")
    return ds


def t_interval(values: list[float]) -> tuple[float, float]:
    """95% Student-t interval of the mean over seeds (NaN for one seed)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = T_975.get(len(v) - 1, 1.96) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def evaluate_localization(models: LocalizationModels, roots: dict[int, Path], proto: LocalizationProtocol,
                          methods: list[str], cache: Path | None, progress: bool = True) -> dict:
    """The benchmark table: per method, per seed Dice / AUPRC / AUROC and their mean with a t-interval."""
    results: dict = {"protocol": asdict(proto), "seeds": sorted(roots), "methods": {}}
    for method in methods:
        per_seed = []
        for seed, root in sorted(roots.items()):
            val = load_benchmark_split(root, "val", proto.n_val, models.label)
            test = load_benchmark_split(root, "test", proto.n_test, models.label)
            xv = healthy_images(models, method, val, proto, seed, cache, f"seed {seed} val", progress)
            xt = healthy_images(models, method, test, proto, seed, cache, f"seed {seed} test", progress)
            per_seed.append(score_maps(maps_of(val, xv, proto), val, maps_of(test, xt, proto), test, models.label,
                                       proto.top))
        summary = {}
        for k in ("dice", "auprc", "auroc", "val_dice"):
            vals = [r[k] for r in per_seed]
            lo, hi = t_interval(vals)
            summary[k] = {"mean": float(np.mean(vals)), "ci_low": lo, "ci_high": hi, "per_seed": vals}
        results["methods"][method] = {"settings": method_settings(method, proto), "summary": summary,
                                      "per_seed": per_seed}
    return results


def sweep(models: LocalizationModels, root: Path, proto: LocalizationProtocol, method: str, param: str,
          values: list[float], seed: int, cache: Path | None, progress: bool = True) -> list[dict]:
    """Validation Dice (best threshold), AUPRC and AUROC of ``method`` as ``param`` (w, ratio, classifier_scale,
    steps) varies; ``ratio`` of ``anoddpm`` sets its own L."""
    val = load_benchmark_split(root, "val", proto.n_val, models.label)
    rows = []
    for v in values:
        p = replace(proto, **{param: v})
        if method == "anoddpm" and param == "ratio":
            p = replace(p, anoddpm_ratio=v)
        xv = healthy_images(models, method, val, p, seed, cache, f"{param}={v:g}", progress)
        m = maps_of(val, xv, p)
        tau, dice = best_threshold(m, val.masks)
        rows.append({"method": method, param: v, "dice": dice, "threshold": tau,
                     "auprc": average_precision(m, val.masks),
                     "auroc": auroc(image_scores(m, p.top), val.table[models.label])})
    return rows


def localization_table(results: dict) -> str:
    """Markdown table of :func:`evaluate_localization` results."""
    def cell(s: dict) -> str:
        return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"

    rows = []
    for method, r in results["methods"].items():
        sm = r["summary"]
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        rows.append([method, cell(sm["dice"]), cell(sm["auprc"]), cell(sm["auroc"]), settings])
    return md_table(["method", "Dice (test)", "AUPRC (pixels)", "AUROC (images)", "settings"], rows)


def run_localization_eval(scm: SCM, methods: list[str], roots: list[Path], n_val: int, n_test: int, steps, ratio,
                          cfg_scale, scale, dynamic_norm, batch_size, cache: Path | None, json_out: Path | None,
                          report: Path | None, progress: bool = True, echo=print) -> dict:
    """``diffscm evaluate --task localization``: the lesion table over the seeds' dataset folders."""
    methods = methods or list(METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise DiffSCMError(f"unknown --method {bad[0]!r} for localization (choose from {', '.join(METHODS)})")
    if not roots:
        raise DiffSCMError("--task localization needs --lesion-data DIR (one folder per seed, e.g. from `diffscm data lesion-mnist`)")
    seeds = {}
    for k, root in enumerate(roots):
        info_file = Path(root) / "dataset.json"
        seed = json.loads(info_file.read_text()).get("seed", k) if info_file.is_file() else k
        if seed in seeds:
            raise DiffSCMError(f"--lesion-data {root} repeats seed {seed}")
        seeds[seed] = Path(root)
    models = LocalizationModels.from_scm(scm)
    proto = LocalizationProtocol.from_scm(scm, models.label, n_val=n_val, n_test=n_test, steps=steps, ratio=ratio,
                                          w=cfg_scale, classifier_scale=scale, dynamic_norm=dynamic_norm,
                                          batch_size=batch_size)
    proto.options()  # validate
    ddim_grid(proto.steps, proto.ratio)
    results = evaluate_localization(models, seeds, proto, methods, cache, progress)
    table = localization_table(results)
    echo(table)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(results, indent=2) + "\n")
    if report is not None:
        def write(tmp: Path) -> None:
            (tmp / "index.md").write_text("# Lesion localisation\n\n" + table + "\n")
            (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")

        atomic_write_dir(report, write)
    return results
