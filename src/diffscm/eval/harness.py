"""Evaluation harness: one protocol for every counterfactual method, resumable generation, then scoring.

A method exposes ``abduct(x_u8, digits) -> latent`` and ``predict(latent, digits, seed) -> uint8 images``.
For n factual images (the first n of a split) the harness produces, in chunks cached on disk:

* ``comp[m]`` — the null intervention (predict with the factual parents) applied m times, x⁽ᵐ⁾;
* per seed: ``cf`` = do(digit = random target ≠ factual) and ``rev`` = do(digit = factual) applied to ``cf``.

Scoring (:func:`score`) turns them into effectiveness, composition L1/SSIM, reversibility L1, CLD (each with a
bootstrap 95% CI over images and per-seed values), KID and FID on the judge's features against held-out real images
(with the KID subset std and per-seed ranges) and images/s.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..data import from_model_range, to_model_range
from ..distributed import Topology, barrier, block
from ..errors import DiffSCMError
from .basics import classify, random_targets
from ..scm.mechanisms import InferenceOptions
from .metrics import bootstrap_ci, cld, effectiveness_hits, frechet_distance, kernel_distance, l1_255, ssim_per_image
from ..models import VAE, Oracle
from ..models.io import weights_key
from ..scm.core import SCM, Exogenous, abduct, batch_generator, predict

METRIC_KEYS = ("effectiveness", "composition_l1_1", "composition_l1_10", "reversibility_l1", "cld", "kid_oracle", "fid_oracle",
               "images_per_s")


class Method(Protocol):
    name: str

    def settings(self) -> dict: ...

    def abduct(self, x_u8: np.ndarray, digits: np.ndarray) -> torch.Tensor: ...

    def predict(self, latent: torch.Tensor, digits: np.ndarray, seed: int,
                factual: np.ndarray | None = None) -> np.ndarray: ...
    # ``factual``: the digits ``latent`` was abducted under (a method may ignore them)


class DiffSCMMethod:
    """Diff-SCM through :func:`diffscm.scm.abduct` / :func:`diffscm.scm.predict` with fixed inference options."""

    def __init__(self, scm: SCM, opts: InferenceOptions, name: str = "diffscm", abduction_memo: dict | None = None):
        self.scm, self.opts, self.name = scm, opts, name
        self.memo = abduction_memo  # shared between methods that differ only in prediction (e.g. a scale sweep)

    def settings(self) -> dict:
        o = self.opts
        grid = self.scm.image_mechanism.grid(o)
        return {"method": "diffscm", "steps": o.steps, "ratio": o.ratio, "used_steps": len(grid) - 1,
                "t_max": int(grid[-1]), "scales": o.scales, "eta": o.eta, "clip": o.clip,
                "dynamic_norm": o.dynamic_norm, "model": self.scm.path.name if self.scm.path else None,
                "mechanism": self.scm.image_mechanism.mechanism(o), "inversion": o.inversion,
                "inversion_iters": o.inversion_iters, "abduction": o.abduction, "cfg_scale": o.cfg_scale,
                "cfg_weights": o.cfg_weights, "bdia_gamma": o.bdia_gamma, "guidance": o.guidance,
                "weights": self._weights()}

    def _weights(self) -> str:
        if not hasattr(self, "_wkey"):
            mech = self.scm.image_mechanism
            self._wkey = "-".join([weights_key(mech.diffusion)] + [weights_key(p) for _, p in sorted(mech.predictors.items())])
        return self._wkey

    def abduct(self, x_u8, digits):
        key = None
        if self.memo is not None:
            o = self.opts   # a factual abduction inverts the decoding ε under the factual digits: key on all of it
            h = hashlib.sha256(np.ascontiguousarray(x_u8).tobytes())
            h.update(np.ascontiguousarray(digits).astype(np.int64).tobytes())
            key = (o.steps, o.ratio, o.mechanism, o.inversion, o.inversion_iters, o.abduction, o.bdia_gamma, o.guidance,
                   o.cfg_scale, tuple(sorted(o.cfg_weights.items())), tuple(sorted(o.scales.items()))
                   if o.abduction == "factual" else (), h.hexdigest())
            if key in self.memo:
                return self.memo[key]
        out = []
        for i in range(0, len(x_u8), self.opts.batch_size):
            obs = {"image": to_model_range(x_u8[i:i + self.opts.batch_size]).to(self.scm.device),
                   "digit": torch.as_tensor(digits[i:i + self.opts.batch_size], device=self.scm.device)}
            out.append(abduct(self.scm, obs, self.opts).image.cpu())
        u = torch.cat(out)
        if key is not None:
            self.memo[key] = u
        return u

    def predict(self, latent, digits, seed, factual=None):
        out = []
        bs = self.opts.batch_size
        for b, i in enumerate(range(0, len(latent), bs)):
            d = torch.as_tensor(digits[i:i + bs], device=self.scm.device)
            gen = batch_generator(self.scm.device, seed, b)
            fact = None if factual is None else {"digit": torch.as_tensor(factual[i:i + bs], device=self.scm.device)}
            noise = Exogenous({"digit": d}, latent[i:i + bs].to(self.scm.device), fact)
            out.append(from_model_range(predict(self.scm, noise, {"digit": d}, self.opts, generator=gen)))
        return np.concatenate(out)


@dataclass
class EvalProtocol:
    """What to generate: ``n`` images of ``split``, ``seeds``, composition depths ``m`` (deepest on ``comp_n``)."""

    n: int = 1000
    split: str = "test"
    seeds: tuple[int, ...] = (0, 1, 2)
    comp_m: tuple[int, ...] = (1, 10)       # must include 1
    comp_n: int = 100
    chunk: int = 100
    phases: tuple[str, ...] = ("composition", "counterfactual", "reversibility")

    def key(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class Generated:
    """Images produced by :func:`generate` (uint8), with timings."""

    x: np.ndarray
    digits: np.ndarray
    targets: dict[int, np.ndarray]
    cf: dict[int, np.ndarray] = field(default_factory=dict)
    rev: dict[int, np.ndarray] = field(default_factory=dict)
    comp: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _settings_hash(method: Method, proto: EvalProtocol) -> str:
    blob = json.dumps({"method": method.settings(), "protocol": proto.key()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def generate(method: Method, x_u8: np.ndarray, digits: np.ndarray, proto: EvalProtocol, cache: Path | None = None,
             progress: bool = True, top: Topology | None = None) -> Generated:
    """Run the protocol chunk by chunk; with ``cache`` every finished chunk is saved and skipped on a rerun.
    With a multi-process ``top`` the chunks are shared out over the ranks (see :func:`cached_chunks`)."""
    top = top or Topology()
    n = len(x_u8)
    targets = {s: random_targets(digits, s) for s in proto.seeds}
    folder = None
    if cache is not None:
        folder = Path(cache) / f"{method.name}-{_settings_hash(method, proto)}"
        folder.mkdir(parents=True, exist_ok=True)
        if top.is_main:
            (folder / "settings.json").write_text(json.dumps({"method": method.settings(), "protocol": proto.key()},
                                                             indent=1, default=str) + "\n")

    def run(sl: slice, start: int) -> dict[str, np.ndarray]:
        return _run_chunk(method, x_u8[sl], digits[sl], {s: t[sl] for s, t in targets.items()}, proto,
                          n_deep=max(0, min(proto.comp_n - start, proto.chunk)))

    parts = cached_chunks(folder, n, proto.chunk, run, method.name, progress, top)
    gen = Generated(x_u8, digits, targets)
    for key in parts[0]:
        if key.startswith("t_"):
            gen.seconds[key[2:]] = float(sum(p[key] for p in parts if key in p))
            continue
        arr = np.concatenate([p[key] for p in parts if key in p])
        kind, _, num = key.partition("_")
        getattr(gen, kind)[int(num)] = arr
    return gen


def cached_chunks(folder: Path | None, n: int, chunk: int, fn, label: str, progress: bool = True,
                  top: Topology | None = None) -> list[dict]:
    """``fn(slice, start) -> {name: array}`` over consecutive chunks of ``n`` items; with ``folder`` each finished
    chunk is saved atomically as ``chunk_XXXX.npz`` and read back instead of recomputed on a rerun.

    With several processes (``top``) each rank computes a contiguous block of the chunks into ``folder`` (a folder
    every rank can see), then all ranks read every chunk back: the result equals the single-process one."""
    top = top or Topology()
    starts = list(range(0, n, chunk))
    if top.distributed and folder is None:
        raise DiffSCMError("evaluation with several processes needs a cache folder shared by the processes")

    def get(ci: int, compute: bool) -> dict:
        path = folder / f"chunk_{ci:04d}.npz" if folder else None
        if path is not None and path.exists():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        if not compute:
            raise DiffSCMError(f"chunk {path} is missing after every process finished")
        start = starts[ci]
        part = fn(slice(start, min(start + chunk, n)), start)
        if path is not None:
            tmp = path.with_suffix(f".tmp{top.rank}.npz")
            np.savez(tmp, **part)
            tmp.replace(path)
        return part

    mine = block(len(starts), top) if top.distributed else range(len(starts))
    parts = {}
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), disable=not (progress and top.is_main)) as bar:
        task = bar.add_task("chunks", total=len(mine))
        for ci in mine:
            parts[ci] = get(ci, compute=True)
            bar.advance(task)
    barrier(top)
    return [parts[ci] if ci in parts else get(ci, compute=False) for ci in range(len(starts))]


def generate_chunks(method, x_u8: np.ndarray, attrs: dict[str, np.ndarray], target: dict, kinds, seeds,
                    folder: Path | None, chunk: int = 100, rev_seeds=None, rev_n: int | None = None, comp_n: int = 0,
                    comp_m=(1, 10), progress: bool = True, top: Topology | None = None) -> dict:
    """Counterfactuals of a method (``abduct(x_u8, attrs)`` / ``predict(latent, attrs, seed, factual=)``) per seed ×
    intervention kind (``target[seed][kind]``: the parent values asked for), their reversals (``rev_seeds``, the first
    ``rev_n`` images; None: all) and the null-intervention compositions (m = 1 on all, the deeper ones on the first
    ``comp_n``), in cached chunks. Returns ``{"cf", "rev": {(seed, kind): images}, "comp": {m: images},
    "seconds": {name: s}}``."""
    rev_seeds = tuple(seeds) if rev_seeds is None else tuple(rev_seeds)

    def run(sl, start):
        out: dict[str, np.ndarray] = {}
        x, a = x_u8[sl], {k: v[sl] for k, v in attrs.items()}
        t0 = time.perf_counter()
        u = method.abduct(x, a)
        out["t_abduct"] = np.float64(time.perf_counter() - t0)
        n_rev = len(x) if rev_n is None else max(0, min(rev_n - start, len(x)))
        for s in seeds:
            for kind in kinds:
                tg = {k: v[sl] for k, v in target[s][kind].items()}
                t0 = time.perf_counter()
                cf = method.predict(u, tg, s, factual=a)
                out[f"t_cf_{s}_{kind}"] = np.float64(time.perf_counter() - t0)
                out[f"cf_{s}_{kind}"] = cf
                if s in rev_seeds and n_rev:
                    tr = {k: v[:n_rev] for k, v in tg.items()}
                    out[f"rev_{s}_{kind}"] = method.predict(method.abduct(cf[:n_rev], tr),
                                                            {k: v[:n_rev] for k, v in a.items()}, s, factual=tr)
        cur = method.predict(u, a, seeds[0], factual=a)
        out["comp_1"] = cur
        n_deep = max(0, min(comp_n - start, len(x)))
        cur, a_deep, m = cur[:n_deep], {k: v[:n_deep] for k, v in a.items()}, 1
        while len(cur) and m < max(comp_m):
            cur, m = method.predict(method.abduct(cur, a_deep), a_deep, seeds[0], factual=a_deep), m + 1
            if m in comp_m:
                out[f"comp_{m}"] = cur
        return out

    parts = cached_chunks(folder, len(x_u8), chunk, run, method.name, progress, top)
    gen: dict = {"cf": {}, "rev": {}, "comp": {}, "seconds": {}}
    for key in parts[0]:
        if key.startswith("t_"):
            gen["seconds"][key[2:]] = float(sum(p[key] for p in parts if key in p))
            continue
        arr = np.concatenate([p[key] for p in parts if key in p])
        head, _, rest = key.partition("_")
        if head == "comp":
            gen["comp"][int(rest)] = arr
        else:
            s, kind = rest.split("_", 1)
            gen[head][(int(s), kind)] = arr
    return gen


def _run_chunk(method: Method, x: np.ndarray, d: np.ndarray, targets: dict[int, np.ndarray], proto: EvalProtocol,
               n_deep: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    seed0 = proto.seeds[0]
    t0 = time.perf_counter()
    u = method.abduct(x, d)
    out["t_abduct"] = np.float64(time.perf_counter() - t0)
    if "counterfactual" in proto.phases:
        for s in proto.seeds:
            t0 = time.perf_counter()
            cf = method.predict(u, targets[s], s, factual=d)
            out[f"t_cf{s}"] = np.float64(time.perf_counter() - t0)
            out[f"cf_{s}"] = cf
            if "reversibility" in proto.phases:
                out[f"rev_{s}"] = method.predict(method.abduct(cf, targets[s]), d, s, factual=targets[s])
    if "composition" in proto.phases:
        cur, m = method.predict(u, d, seed0, factual=d), 1        # x⁽¹⁾ reuses the abduction of x
        out["comp_1"] = cur
        cur, d_deep = cur[:n_deep], d[:n_deep]          # deeper compositions on the first comp_n images only
        while len(cur) and m < max(proto.comp_m):
            cur, m = method.predict(method.abduct(cur, d_deep), d_deep, seed0, factual=d_deep), m + 1
            if m in proto.comp_m:
                out[f"comp_{m}"] = cur
    return out


# ---------------------------------------------------------------- scoring

@dataclass
class Scorer:
    """Models and reference data the metrics need: oracle, CLD VAE, real-image pools."""

    oracle: Oracle
    vae: VAE
    ref_images: np.ndarray           # real images for CLD's S_cf / S_f (e.g. the whole test split)
    ref_digits: np.ndarray
    real_features: np.ndarray        # judge features of held-out real images (KID/FID reference)
    ref_offset: np.ndarray | None = None  # index of factual i in ref_images (excluded from its S_f), or None
    n_boot: int = 1000
    boot_seed: int = 0

    @classmethod
    def build(cls, oracle: Oracle, vae: VAE, ref_images: np.ndarray, ref_digits: np.ndarray,
              train_images: np.ndarray, **kw) -> "Scorer":
        return cls(oracle, vae, ref_images, ref_digits, oracle_features(oracle, train_images), **kw)

    def classify(self, images_u8: np.ndarray) -> np.ndarray:
        return classify(self.oracle, images_u8)

    def posterior(self, images_u8: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior means and log-variances (float64), one encoder pass per batch."""
        stats = batched_apply(lambda x: torch.cat(self.vae.encode(x), dim=1), self.vae, images_u8).double()
        return stats.chunk(2, dim=1)

    def __post_init__(self) -> None:
        self.ref_posterior = self.posterior(self.ref_images)


def oracle_features(oracle: Oracle, images_u8: np.ndarray) -> np.ndarray:
    """Penultimate oracle features of uint8 images."""
    return batched_apply(oracle.features, oracle, images_u8).double().numpy()


def batched_apply(fn, module: torch.nn.Module, images_u8: np.ndarray, bs: int = 1000) -> torch.Tensor:
    """``fn`` over uint8 images in batches on ``module``'s device (inference mode), concatenated as float32 on CPU."""
    dev = next(module.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(images_u8), bs):
            out.append(fn(to_model_range(images_u8[i:i + bs]).to(dev)).float().cpu())
    return torch.cat(out)


def realism(real_features: np.ndarray, per_seed_features: list[np.ndarray], seed: int = 0) -> dict:
    """KID (mean over seeds, with the mean subset std) and FID on classifier features, each with its per-seed range
    (min–max over seeds, which contains the mean; a bootstrap of FID is biased by duplicated rows)."""
    kid = [kernel_distance(real_features, f, seed=seed) for f in per_seed_features]
    fid = [frechet_distance(real_features, f) for f in per_seed_features]
    note = "range over seeds, not a bootstrap CI"
    return {"kid_oracle": {"mean": float(np.mean([k[0] for k in kid])), "std": float(np.mean([k[1] for k in kid])),
                           "per_seed": [k[0] for k in kid], "per_seed_std": [k[1] for k in kid],
                           "ci_low": min(k[0] for k in kid), "ci_high": max(k[0] for k in kid), "note": note},
            "fid_oracle": {"mean": float(np.mean(fid)), "per_seed": fid, "ci_low": min(fid), "ci_high": max(fid),
                           "note": note}}


def _summary(per_seed: list[float], per_image: np.ndarray | None, seed: int, n_boot: int, stat=None,
             values=None) -> dict:
    d = {"mean": float(np.mean(per_seed)), "per_seed": [float(v) for v in per_seed]}
    if values is not None:
        lo, hi = bootstrap_ci(values, seed=seed, n_boot=n_boot, stat=stat, basic=True)
    elif per_image is not None:
        lo, hi = bootstrap_ci(per_image, seed=seed, n_boot=n_boot)
    else:
        lo = hi = float("nan")
    d["ci_low"], d["ci_high"] = lo, hi
    return d


def score(gen: Generated, scorer: Scorer, weights: tuple[float, float] = (0.8, 0.2)) -> dict:
    """All metrics of one method's generated images: mean, bootstrap 95% CI over images, per-seed values."""
    seeds = sorted(gen.cf)
    res: dict[str, dict] = {}
    nb, bs = scorer.n_boot, scorer.boot_seed
    x = gen.x
    if gen.cf:
        hits = np.stack([effectiveness_hits(scorer.classify, gen.cf[s], gen.targets[s]) for s in seeds], 1)
        res["effectiveness"] = _summary(hits.mean(0).tolist(), hits.mean(1), bs, nb)
        post_x = scorer.posterior(x)
        for key, w in (("cld", weights), ("cld_equal_weights", (0.5, 0.5))):
            vals = np.stack([cld(post_x, scorer.posterior(gen.cf[s]), scorer.ref_posterior, gen.digits, gen.targets[s],
                                 scorer.ref_digits, scorer.ref_offset, w) for s in seeds], 1)
            res[key] = _summary(vals.mean(0).tolist(), vals.mean(1), bs, nb)
        change = np.stack([l1_255(x, gen.cf[s]) for s in seeds], 1)
        res["cf_l1_change"] = _summary(change.mean(0).tolist(), change.mean(1), bs, nb)
        feats = [oracle_features(scorer.oracle, gen.cf[s]) for s in seeds]
        res.update(realism(scorer.real_features, feats))
        total = gen.seconds.get("abduct", 0.0)
        ips = [len(x) / (total + gen.seconds[f"cf{s}"]) for s in seeds]
        res["images_per_s"] = {"mean": float(np.mean(ips)), "ci_low": float(min(ips)), "ci_high": float(max(ips)),
                               "per_seed": ips, "note": "range over seeds, not a bootstrap CI"}
    if gen.rev:
        rev = np.stack([l1_255(x, gen.rev[s]) for s in seeds], 1)
        res["reversibility_l1"] = _summary(rev.mean(0).tolist(), rev.mean(1), bs, nb)
    for m, imgs in sorted(gen.comp.items()):
        ref = x[:len(imgs)]
        l1 = l1_255(ref, imgs)
        ss = ssim_per_image(ref, imgs)
        n_seeds = max(len(seeds), 1)
        for key, v in ((f"composition_l1_{m}", l1), (f"composition_ssim_{m}", ss)):
            res[key] = _summary([float(v.mean())] * n_seeds, v, bs, nb)
            res[key]["n"] = len(imgs)
            res[key]["note"] = "deterministic null intervention: identical for every seed"
    return res
