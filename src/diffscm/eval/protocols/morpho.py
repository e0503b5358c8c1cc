"""Morpho-MNIST evaluation: interventions on thickness, intensity and both, scored against *true* counterfactuals.

The data generator is known, so for a test image with source MNIST digit d and attributes (t, i) the true
counterfactual of do(t = t') is render(d, t', i') with i' = 64 + 191·σ(2(t' − 2.5) + e), e the image's abducted
intensity deviation; of do(i = i') it is render(d, t, i'). Every method shares the SCM's attribute mechanisms (flows)
for the counterfactual parent values and differs only in the image mechanism.

A method exposes ``abduct(x_u8, attrs) -> latent`` and ``predict(latent, attrs, seed) -> uint8``. Generation runs in
cached chunks (resumable); :func:`score_morpho` turns the images into per-intervention metrics with bootstrap CIs.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...data import from_model_range, to_model_range
from ...data import morphomnist as mm
from ...distributed import Topology
from ...errors import DiffSCMError
from ..harness import DiffSCMMethod, batched_apply, cached_chunks, generate_chunks
from ...scm.mechanisms import InferenceOptions
from ..metrics import bootstrap_ci, cld, frechet_distance, kernel_distance, l1_255
from ...models.io import weights_key
from ...scm.core import SCM, Exogenous, abduct_attributes, act, batch_generator

INTERVENTIONS = ("thickness", "intensity", "joint")
CFBENCH = ("thickness", "intensity", "digit")   # the counterfactual benchmark's single-parent interventions
CONTINUOUS = ("thickness", "intensity")
N_BINS = 9


class MorphoDiffSCM:
    """Diff-SCM image mechanism: DDIM latent, guided decoding towards every image parent."""

    def __init__(self, scm: SCM, opts: InferenceOptions, name: str = "diffscm"):
        self.scm, self.opts, self.name = scm, opts, name

    def settings(self) -> dict:
        return DiffSCMMethod(self.scm, self.opts, self.name).settings()

    def abduct(self, x_u8: np.ndarray, attrs: dict[str, np.ndarray]) -> torch.Tensor:
        bs, dev = self.opts.batch_size, self.scm.device
        pa = lambda sl: {k: torch.as_tensor(attrs[k][sl], device=dev) for k in self.scm.graph.image.parents}  # noqa: E731
        return torch.cat([self.scm.image_mechanism.abduct(to_model_range(x_u8[i:i + bs]).to(dev), self.opts,
                                                          parents=pa(slice(i, i + bs))).cpu()
                          for i in range(0, len(x_u8), bs)])

    def predict(self, latent: torch.Tensor, attrs: dict[str, np.ndarray], seed: int,
                factual: dict[str, np.ndarray] | None = None) -> np.ndarray:
        bs, dev, out = self.opts.batch_size, self.scm.device, []
        parents = self.scm.graph.image.parents
        for b, i in enumerate(range(0, len(latent), bs)):
            pa = {k: torch.as_tensor(attrs[k][i:i + bs], device=dev) for k in parents}
            fact = None if factual is None else {k: torch.as_tensor(factual[k][i:i + bs], device=dev) for k in parents}
            gen = batch_generator(dev, seed, b)
            img = self.scm.image_mechanism.predict(latent[i:i + bs].to(dev), pa, self.opts, gen, factual=fact)
            out.append(from_model_range(img))
        return np.concatenate(out)


class MorphoCVAE:
    """DeepSCM-style image mechanism: image := decoder(z, digit, t, i), z abducted as the posterior mean."""

    name = "cvae"

    def __init__(self, cvae, batch_size: int = 500):
        if not cvae.config.get("cond"):
            raise ValueError("the Morpho-MNIST cVAE baseline needs a VAE conditioned on digit, thickness, intensity")
        self.model, self.batch_size = cvae.eval(), batch_size
        self.names = [c["name"] for c in cvae.config["cond"]]

    def settings(self) -> dict:
        return {"method": "cvae", "latent": self.model.config["latent"], "cond": self.names,
                "abduction": "posterior mean", "weights": weights_key(self.model)}

    def _y(self, attrs, sl, dev):
        return torch.stack([torch.as_tensor(np.asarray(attrs[n][sl]), dtype=torch.float32) for n in self.names], 1).to(dev)

    def abduct(self, x_u8, attrs):
        dev, out = next(self.model.parameters()).device, []
        with torch.inference_mode():
            for i in range(0, len(x_u8), self.batch_size):
                sl = slice(i, i + self.batch_size)
                out.append(self.model.encode(to_model_range(x_u8[sl]).to(dev), self._y(attrs, sl, dev))[0].cpu())
        return torch.cat(out)

    def predict(self, latent, attrs, seed, factual=None):
        dev, out = next(self.model.parameters()).device, []
        with torch.inference_mode():
            for i in range(0, len(latent), self.batch_size):
                sl = slice(i, i + self.batch_size)
                out.append(from_model_range(self.model.decode(latent[sl].to(dev), self._y(attrs, sl, dev))))
        return np.concatenate(out)


# ------------------------------------------------------------------ interventions

def bin_edges(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """``n_bins`` equal-width bins over the range of ``values``."""
    return np.linspace(float(np.min(values)), float(np.max(values)), n_bins + 1)


def to_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def draw_values(factual: np.ndarray, pool: np.ndarray, rng: np.random.Generator, n_bins: int = N_BINS,
                edges: np.ndarray | None = None) -> np.ndarray:
    """For each factual value, a value of ``pool`` drawn uniformly among those whose bin differs from its own
    (``edges``, or ``n_bins`` equal bins over the pool's range)."""
    edges = bin_edges(pool, n_bins) if edges is None else edges
    pool_bins, fb = to_bins(pool, edges), to_bins(factual, edges)
    out = np.empty(len(factual))
    for k, b in enumerate(fb):
        cand = pool[pool_bins != b]
        out[k] = cand[rng.integers(len(cand))]
    return out


def draw_interventions(attrs: dict[str, np.ndarray], pool: dict[str, np.ndarray], seed: int) -> dict[str, dict]:
    """do() values per intervention type for every factual: thickness, intensity and both, each drawn from the pool
    in another of 9 bins over the pool's range."""
    out = {}
    for k, kind in enumerate(INTERVENTIONS):
        rng = np.random.default_rng([seed, k])
        names = CONTINUOUS if kind == "joint" else (kind,)
        out[kind] = {n: draw_values(attrs[n], pool[n], rng) for n in names}
    return out


def cfbench_edges(name: str) -> np.ndarray:
    """The benchmark's 9 equal bins of a continuous attribute: ``linspace(−1, 1, 10)`` on its min–max scaled range."""
    from ...models.judge import RANGES

    return np.linspace(*RANGES[name], N_BINS + 1)


def draw_cfbench(attrs: dict[str, np.ndarray], pool: dict[str, np.ndarray], seed: int) -> dict[str, dict]:
    """The counterfactual benchmark's interventions, one parent at a time: thickness or intensity drawn uniformly
    from the distinct pool (test-set) values that fall in another of the 9 bins; the digit, another class."""
    out = {}
    for k, kind in enumerate(CFBENCH):
        rng = np.random.default_rng([seed, 100 + k])
        if kind == "digit":
            d = np.asarray(attrs["digit"])
            out[kind] = {"digit": (d + rng.integers(1, 10, len(d))) % 10}
        else:
            out[kind] = {kind: draw_values(attrs[kind], np.unique(pool[kind]), rng, edges=cfbench_edges(kind))}
    return out


def counterfactual_attributes(scm: SCM, attrs: dict[str, np.ndarray], do: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The SCM's counterfactual parent values: intervened ones set, descendants through their flows."""
    obs = {k: torch.as_tensor(v) for k, v in attrs.items()}
    obs = {k: (v.float() if v.is_floating_point() else v).to(scm.device) for k, v in obs.items()}
    noise = Exogenous(abduct_attributes(scm, obs), None)
    kinds = {k: torch.long if scm.graph.variables[k].kind == "categorical" else torch.float32 for k in do}
    vals = act(scm, obs, noise, {k: torch.as_tensor(v, dtype=kinds[k], device=scm.device) for k, v in do.items()})
    return {k: v.cpu().numpy() for k, v in vals.items()}


def true_attributes(attrs: dict[str, np.ndarray], do: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    t, i = mm.true_counterfactual_values(attrs["thickness"], attrs["intensity"], do.get("thickness"), do.get("intensity"))
    return {"digit": np.asarray(do.get("digit", attrs["digit"])), "thickness": t, "intensity": i}


# ------------------------------------------------------------------ generation

@dataclass
class MorphoProtocol:
    n: int = 1000
    seeds: tuple[int, ...] = (0, 1, 2)
    rev_seeds: tuple[int, ...] = (0, 1, 2)
    rev_n: int | None = None                 # reversibility on the first rev_n images only (None: all)
    comp_m: tuple[int, ...] = (1, 10)
    comp_n: int = 100
    chunk: int = 100
    protocol: str = "bins"                  # "bins" (thickness, intensity, joint) or "cfbench" (thickness, intensity, digit)

    @property
    def interventions(self) -> tuple[str, ...]:
        return CFBENCH if self.protocol == "cfbench" else INTERVENTIONS

    def key(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class MorphoGenerated:
    x: np.ndarray
    attrs: dict[str, np.ndarray]
    do: dict[int, dict[str, dict[str, np.ndarray]]]
    target: dict[int, dict[str, dict[str, np.ndarray]]]        # SCM counterfactual parents (what the method is asked)
    truth: dict[int, dict[str, dict[str, np.ndarray]]]         # true counterfactual parents
    cf: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    rev: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    comp: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _folder(cache: Path | None, name: str, blob: dict) -> Path | None:
    if cache is None:
        return None
    h = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = Path(cache) / f"{name}-{h}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(blob, indent=1, default=str) + "\n")
    return folder


def _values_hash(values: dict) -> str:
    """Fingerprint of per-seed, per-intervention attribute values (rounded to 6 decimals)."""
    return hashlib.sha256(json.dumps({str(s): {k: {n: np.round(v, 6).tolist() for n, v in d.items()}
                                               for k, d in t.items()} for s, t in values.items()}).encode()).hexdigest()


def plan(scm: SCM, attrs: dict[str, np.ndarray], pool: dict[str, np.ndarray], seeds,
         protocol: str = "bins") -> tuple[dict, dict, dict]:
    """do() values, the SCM's counterfactual parents and the true ones, per seed and intervention type."""
    do, target, truth = {}, {}, {}
    draw = draw_cfbench if protocol == "cfbench" else draw_interventions
    for s in seeds:
        do[s] = draw(attrs, pool, s)
        target[s] = {k: counterfactual_attributes(scm, attrs, d) for k, d in do[s].items()}
        truth[s] = {k: true_attributes(attrs, d) for k, d in do[s].items()}
    return do, target, truth


def true_counterfactuals(source_digits: np.ndarray, truth: dict, proto: MorphoProtocol, cache: Path | None,
                         progress: bool = True, workers: int | None = None,
                         top: Topology | None = None) -> dict[tuple[int, str], np.ndarray]:
    """render(d, t', i') of every (seed, intervention), cached by chunk (shared over the ranks of ``top``)."""
    blob = {"truth": True, "n": proto.n, "seeds": list(proto.seeds), "chunk": proto.chunk, "generator": mm.GENERATOR_VERSION,
            "interventions": list(proto.interventions),
            "values": _values_hash(truth)}
    folder = _folder(cache, "truth", blob)

    def run(sl, _start):
        out = {}
        for s in proto.seeds:
            for kind in (k for k in proto.interventions if k != "digit"):   # a new digit has no true image
                v = truth[s][kind]
                out[f"{s}_{kind}"] = mm.render_batch(source_digits[sl], v["thickness"][sl], v["intensity"][sl],
                                                     workers=workers, chunk=25)
        return out

    parts = cached_chunks(folder, len(source_digits), proto.chunk, run, "true counterfactuals", progress, top)
    return {(int(k.split("_")[0]), k.split("_", 1)[1]): np.concatenate([p[k] for p in parts]) for k in parts[0]}


def generate_morpho(method, scm: SCM, x_u8: np.ndarray, attrs: dict[str, np.ndarray], pool: dict[str, np.ndarray],
                    proto: MorphoProtocol, cache: Path | None = None, progress: bool = True,
                    top: Topology | None = None) -> MorphoGenerated:
    """Counterfactuals for every seed × intervention, reversals, and null-intervention compositions; with a
    multi-process ``top`` the chunks are shared out over the ranks (:func:`diffscm.eval.harness.cached_chunks`)."""
    do, target, truth = plan(scm, attrs, pool, proto.seeds, proto.protocol)
    gen = MorphoGenerated(x_u8, attrs, do, target, truth)
    # the targets come from the SCM's flows: a repacked SCM with other flows must not reuse these images
    folder = _folder(cache, method.name, {"method": method.settings(), "protocol": proto.key(),
                                          "targets": _values_hash(target)})

    out = generate_chunks(method, x_u8, attrs, target, proto.interventions, proto.seeds, folder, proto.chunk,
                          proto.rev_seeds, proto.rev_n, proto.comp_n, proto.comp_m, progress, top)
    gen.cf, gen.rev, gen.comp, gen.seconds = out["cf"], out["rev"], out["comp"], out["seconds"]
    return gen


# ------------------------------------------------------------------ scoring

@dataclass
class MorphoScorer:
    """Clean-image oracles, the CLD VAE, the real test pool (attributes binned for CLD) and FID reference features."""

    oracles: dict                      # digit classifier, thickness/intensity regressors
    vae: torch.nn.Module
    ref_images: np.ndarray
    ref_attrs: dict[str, np.ndarray]
    train_images: np.ndarray
    n_boot: int = 1000
    boot_seed: int = 0
    workers: int | None = None
    judges: dict | None = None         # the counterfactual benchmark's judges (digit, thickness, intensity)

    def __post_init__(self) -> None:
        self.edges = {n: bin_edges(self.ref_attrs[n]) for n in CONTINUOUS}
        self.ref_posterior = self.posterior(self.ref_images)
        self.real_features = self.features(self.train_images)
        if self.judges is not None:
            self.judge_real = self.judge_features(self.train_images)

    def judge_features(self, images_u8) -> np.ndarray:
        j = self.judges["digit"]
        return batched_apply(j.features, j, images_u8).double().numpy()

    def judge_attributes(self, images_u8, intensity: np.ndarray) -> dict[str, np.ndarray]:
        """The judges' reading of each image: the digit, the intensity, and the thickness given ``intensity`` (the
        benchmark conditions its thickness judge on the counterfactual's intensity)."""
        out = {"digit": batched_apply(self.judges["digit"].predict, self.judges["digit"], images_u8).numpy(),
               "intensity": batched_apply(self.judges["intensity"].predict, self.judges["intensity"], images_u8).numpy()}
        jt, ctx = self.judges["thickness"], torch.as_tensor(np.asarray(intensity, dtype=np.float32))[:, None]
        dev = next(jt.parameters()).device
        with torch.inference_mode():
            out["thickness"] = torch.cat([jt.predict(to_model_range(images_u8[i:i + 1000]).to(dev), ctx[i:i + 1000].to(dev)).cpu()
                                          for i in range(0, len(images_u8), 1000)]).numpy()
        return {k: v.astype(np.float64) if k != "digit" else v for k, v in out.items()}

    def posterior(self, images_u8):
        stats = batched_apply(lambda x: torch.cat(self.vae.encode(x), dim=1), self.vae, images_u8).double()
        return stats.chunk(2, dim=1)

    def features(self, images_u8) -> np.ndarray:
        o = self.oracles["digit"]
        return batched_apply(o.features, o, images_u8).double().numpy()

    def predict_attributes(self, images_u8) -> dict[str, np.ndarray]:
        out = {"digit": batched_apply(self.oracles["digit"], self.oracles["digit"], images_u8).argmax(1).numpy()}
        for n in CONTINUOUS:
            o = self.oracles[n]
            out[n] = batched_apply(o.predict, o, images_u8).numpy().astype(np.float64)
        return out

    def measure(self, images_u8) -> dict[str, np.ndarray]:
        m = mm.measure_batch(images_u8, workers=self.workers)
        return {n: m[:, mm.METRIC_COLUMNS.index(n)] for n in CONTINUOUS}

    def group(self, attrs: dict[str, np.ndarray], kind: str, edges: dict | None = None) -> np.ndarray:
        """CLD's parent label of each image: the bin of the intervened variable(s), or the digit."""
        if kind == "digit":
            return np.asarray(attrs["digit"], dtype=np.int64)
        edges = edges or self.edges
        names = CONTINUOUS if kind == "joint" else (kind,)
        label = np.zeros(len(attrs[names[0]]), dtype=np.int64)
        for n in names:
            label = label * N_BINS + to_bins(np.asarray(attrs[n]), edges[n])
        return label


def _summ(per_seed: list[float], per_image: np.ndarray | None, sc: MorphoScorer) -> dict:
    """Mean over seeds and a bootstrap CI over images; rows that are NaN (e.g. CLD without real images of a joint
    bin) are left out and counted in ``excluded``."""
    d = {"mean": float(np.mean(per_seed)), "per_seed": [float(v) for v in per_seed]}
    if per_image is not None:
        bad = np.isnan(per_image)
        if bad.any():
            d["excluded"] = int(bad.sum())
            per_image = per_image[~bad]
    if per_image is not None and len(per_image):
        lo, hi = bootstrap_ci(per_image, seed=sc.boot_seed, n_boot=sc.n_boot)
    else:
        lo = hi = float("nan")
    d["ci_low"], d["ci_high"] = lo, hi
    return d


def _columns(cols: dict[str, list[np.ndarray]], sc: MorphoScorer) -> dict:
    """Per-image columns (one array per seed) → mean over seeds with a bootstrap CI over images, n and seeds."""
    out = {}
    for key, vals in cols.items():
        arr = np.stack(vals, 1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rows = arr.mean(1)                            # NaN if any seed has no value for that image
            per_seed = [float(np.nanmean(arr[:, j])) for j in range(arr.shape[1])]
        out[key] = {**_summ(per_seed, rows, sc), "n": int(arr.shape[0]), "seeds": int(arr.shape[1])}
    return out


def score_morpho(gen: MorphoGenerated, sc: MorphoScorer, true_cf: dict, ref_offset: np.ndarray | None = None,
                 weights: tuple[float, float] = (0.8, 0.2)) -> dict:
    """Per intervention type: true-counterfactual MAE, measured and predicted attribute errors, digit accuracy,
    CLD, reversibility, FID; per method: composition and images/s. Means over seeds, 95% bootstrap CIs over images."""
    seeds = sorted({s for s, _ in gen.cf})
    res: dict = {"interventions": {}}
    post_x = sc.posterior(gen.x)
    for kind in INTERVENTIONS:
        r: dict = {}
        cols: dict[str, list[np.ndarray]] = {}
        fid = []
        for s in seeds:
            cf, truth = gen.cf[(s, kind)], gen.truth[s][kind]
            cols.setdefault("true_cf_mae", []).append(l1_255(cf, true_cf[(s, kind)]))
            meas = sc.measure(cf)
            pred = sc.predict_attributes(cf)
            for n in CONTINUOUS:
                cols.setdefault(f"{n}_mae_measured", []).append(np.abs(meas[n] - truth[n]))
                cols.setdefault(f"{n}_mae_predicted", []).append(np.abs(pred[n] - truth[n]))
            cols.setdefault("digit_accuracy", []).append((pred["digit"] == gen.attrs["digit"]).astype(np.float64))
            cols.setdefault("cld", []).append(cld(post_x, sc.posterior(cf), sc.ref_posterior, sc.group(gen.attrs, kind),
                                                  sc.group(truth, kind), sc.group(sc.ref_attrs, kind), ref_offset, weights))
            if (s, kind) in gen.rev:
                rev = gen.rev[(s, kind)]
                cols.setdefault("reversibility_l1", []).append(l1_255(gen.x[:len(rev)], rev))
            fid.append(frechet_distance(sc.real_features, sc.features(cf)))
        r.update(_columns(cols, sc))
        r["fid_oracle"] = {"mean": float(np.mean(fid)), "per_seed": fid, "ci_low": float(min(fid)),
                           "ci_high": float(max(fid)), "note": "range over seeds"}
        ips = [len(gen.x) / (gen.seconds.get("abduct", 0.0) + gen.seconds[f"cf_{s}_{kind}"]) for s in seeds]
        r["images_per_s"] = {"mean": float(np.mean(ips)), "per_seed": ips}
        res["interventions"][kind] = r
    # errors of the SCM's own attribute counterfactuals (the flows) against the true ones
    flow_err = []
    for s in seeds:
        flow_err.append(np.abs(gen.target[s]["thickness"]["intensity"] - gen.truth[s]["thickness"]["intensity"]))
    arr = np.stack(flow_err, 1)
    res["flow_intensity_mae_under_do_thickness"] = _summ(arr.mean(0).tolist(), arr.mean(1), sc)
    for m, imgs in sorted(gen.comp.items()):
        v = l1_255(gen.x[:len(imgs)], imgs)
        res[f"composition_l1_{m}"] = _summ([float(v.mean())], v, sc)
        res[f"composition_l1_{m}"]["n"] = int(len(imgs))
    return res


PADDED_FRACTION = 28 * 28 / (32 * 32)   # an L1 mean over the 32×32 zero-padded image, from the 28×28 one


def score_cfbench(gen: MorphoGenerated, sc: MorphoScorer, true_cf: dict, ref_offset: np.ndarray | None = None,
                  weights: tuple[float, float] = (0.8, 0.2)) -> dict:
    """The counterfactual benchmark's Morpho-MNIST columns, per intervention do(t), do(i), do(digit): every
    attribute of the counterfactual as the judges read it against the counterfactual parents the method was asked
    for (thickness and intensity MAE in px and on 0–255, digit accuracy); the same two attributes measured with our
    morphometrics against the measured true counterfactual (the factual itself under do(digit), which changes
    neither); pixel MAE against the true counterfactual; CLD (intervened parent in the benchmark's 9 bins, or the
    digit); reversibility; KID on the digit judge's features against held-out real images (in place of FID's
    Inception features). Composition L1 over the 32×32 zero-padded image, at every m generated."""
    seeds = sorted({s for s, _ in gen.cf})
    edges = {n: cfbench_edges(n) for n in CONTINUOUS}
    res: dict = {"interventions": {}}
    post_x = sc.posterior(gen.x)
    meas_x = sc.measure(gen.x)
    for kind in CFBENCH:
        cols: dict[str, list[np.ndarray]] = {}
        kid = []
        for s in seeds:
            cf, tgt = gen.cf[(s, kind)], gen.target[s][kind]
            judged = sc.judge_attributes(cf, tgt["intensity"])
            for n in CONTINUOUS:
                cols.setdefault(f"{n}_mae", []).append(np.abs(judged[n] - tgt[n]))
            cols.setdefault("digit_accuracy", []).append((judged["digit"] == tgt["digit"]).astype(np.float64))
            meas = sc.measure(cf)
            ref = meas_x if kind == "digit" else sc.measure(true_cf[(s, kind)])
            for n in CONTINUOUS:
                cols.setdefault(f"{n}_mae_measured", []).append(np.abs(meas[n] - ref[n]))
            if kind != "digit":
                cols.setdefault("true_cf_mae", []).append(l1_255(cf, true_cf[(s, kind)]))
            cols.setdefault("cld", []).append(cld(post_x, sc.posterior(cf), sc.ref_posterior, sc.group(gen.attrs, kind, edges),
                                                  sc.group(tgt, kind, edges), sc.group(sc.ref_attrs, kind, edges),
                                                  ref_offset, weights))
            if (s, kind) in gen.rev:
                rev = gen.rev[(s, kind)]
                cols.setdefault("reversibility_l1", []).append(l1_255(gen.x[:len(rev)], rev))
            kid.append(kernel_distance(sc.judge_real, sc.judge_features(cf), seed=s))
        r: dict = _columns(cols, sc)
        r["kid_judge"] = {"mean": float(np.mean([k[0] for k in kid])), "std": float(np.mean([k[1] for k in kid])),
                          "per_seed": [k[0] for k in kid], "ci_low": min(k[0] for k in kid),
                          "ci_high": max(k[0] for k in kid), "note": "range over seeds; subset std in 'std'"}
        ips = [len(gen.x) / (gen.seconds.get("abduct", 0.0) + gen.seconds[f"cf_{s}_{kind}"]) for s in seeds]
        r["images_per_s"] = {"mean": float(np.mean(ips)), "per_seed": ips}
        res["interventions"][kind] = r
    for m, imgs in sorted(gen.comp.items()):
        v = l1_255(gen.x[:len(imgs)], imgs) * PADDED_FRACTION
        res[f"composition_l1_{m}"] = {**_summ([float(v.mean())], v, sc), "n": int(len(imgs)),
                                      "note": "L1 over the 32×32 zero-padded image (0–255)"}
    return res


# the benchmark's published Morpho-MNIST rows (Melistas et al., 2024), as read from the authors' figures:
# thickness MAE and intensity MAE under do(t), do(i), do(digit); digit accuracy likewise; composition L1 m = 1, 10;
# FID (Inception features); CLD
PUBLISHED = {
    "VAE": {"thickness": (.109, .333, .139), "intensity": (3.15, 5.33, 4.64), "digit": (.989, .988, .775),
            "composition": (2.600, 7.698), "fid": 10.1, "cld": .268},
    "HVAE": {"thickness": (.086, .224, .117), "intensity": (1.99, 3.52, 2.10), "digit": (.985, .935, .972),
             "composition": (0.438, 1.550), "fid": 5.36, "cld": .272},
    "GAN": {"thickness": (.228, .680, .393), "intensity": (9.43, 15.14, 12.39), "digit": (.961, .966, .451),
            "composition": (3.807, 11.697), "fid": 35.6, "cld": .286},
}


def cfbench_table(results: dict[str, dict]) -> str:
    """Markdown: our rows (mean [95% CI]) beside the published ones, in the benchmark's column order."""
    from ..report import md_table

    def f(d, nd):
        if d is None:
            return "–"
        lo, hi = d.get("ci_low"), d.get("ci_high")
        ci = f" [{lo:.{nd}f}, {hi:.{nd}f}]" if lo is not None and np.isfinite(lo) else ""
        return f"{d['mean']:.{nd}f}{ci}"

    head = ["model", "thickness MAE do(t) / do(i) / do(d)", "intensity MAE do(t) / do(i) / do(d)",
            "digit acc. do(t) / do(i) / do(d)", "composition L1 m=1 / m=10", "FID (published) / KID ×10³ (ours)",
            "CLD do(t) / do(i) / do(d)"]
    rows = []
    for name, r in results.items():
        iv = r["interventions"]
        rows.append([name] + [" / ".join(f(iv[k].get(col), nd) for k in CFBENCH)
                              for col, nd in (("thickness_mae", 3), ("intensity_mae", 2), ("digit_accuracy", 3))]
                    + [f"{f(r.get('composition_l1_1'), 3)} / {f(r.get('composition_l1_10'), 3)}",
                       " / ".join(f"{iv[k]['kid_judge']['mean'] * 1e3:.2f}" for k in CFBENCH),
                       " / ".join(f(iv[k]["cld"], 3) for k in CFBENCH)])
    for name, p in PUBLISHED.items():
        rows.append([f"{name} (published)"] + [" / ".join(f"{v:g}" for v in p[k]) for k in ("thickness", "intensity", "digit")]
                    + [" / ".join(f"{v:g}" for v in p["composition"]), f"{p['fid']:g}", f"{p['cld']:g}"])
    return md_table(head, rows)


CFBENCH_METHODS = ("diffscm", "diffscm-paper", "cvae")


def cfbench_methods(scm: SCM, names: list[str], overrides: dict) -> dict:
    """Harness methods by name: Diff-SCM at the SCM's defaults (with ``overrides``), the paper's mechanism at its own
    defaults, and the DeepSCM-style cVAE shipped under ``evaluation``."""
    from ...models import load_model

    evaluation = json.loads((scm.path / "scm.json").read_text()).get("evaluation", {})
    out = {}
    for name in names:
        if name == "diffscm":
            out[name] = MorphoDiffSCM(scm, scm.options(**overrides))
        elif name == "diffscm-paper":
            out[name] = MorphoDiffSCM(scm, scm.options(mechanism="paper", batch_size=overrides.get("batch_size")),
                                      "diffscm-paper")
        elif name == "cvae":
            if "cvae" not in evaluation:
                raise DiffSCMError(f"model {scm.path} ships no cVAE (scm.json 'evaluation')")
            out[name] = MorphoCVAE(load_model(scm.path / evaluation["cvae"], scm.device))
        else:
            raise DiffSCMError(f"unknown method {name!r} for the counterfactual benchmark (choose from "
                               f"{', '.join(CFBENCH_METHODS)})")
    return out


def load_judges(scm: SCM) -> dict:
    """The digit, thickness and intensity judges listed under ``evaluation`` as ``judge-NAME``."""
    from ...models import Judge

    evaluation = json.loads((scm.path / "scm.json").read_text()).get("evaluation", {})
    missing = [n for n in CFBENCH if f"judge-{n}" not in evaluation]
    if missing:
        raise DiffSCMError(f"model {scm.path} lacks the benchmark's judges: {', '.join('judge-' + n for n in missing)} "
                           "(train them with `diffscm train judge --dataset morphomnist --target NAME`)")
    return {n: Judge.from_pretrained(scm.path / evaluation[f"judge-{n}"], scm.device) for n in CFBENCH}


def run_cfbench(scm: SCM, methods: dict, data_dir: Path, n: int, seeds: tuple[int, ...], comp_n: int,
                cache: Path | None, progress: bool = True, n_boot: int = 1000, workers: int | None = None,
                top: Topology | None = None, rev_n: int | None = None) -> dict:
    """The counterfactual benchmark on the first ``n`` Morpho-MNIST test images of ``data_dir`` (either layout):
    generate (cached, resumable), render and measure the true counterfactuals, score every method. The test
    images after the first ``n`` are KID's real set; the whole test split is CLD's real pool. Reversibility (not one
    of the benchmark's columns, and half the generation cost) on the first ``rev_n`` images only (None: all)."""
    from ...data import load_mnist
    from ...models import load_model
    from ...data.morphomnist import load_morpho_folder

    x_test, a_test, _ = load_morpho_folder(Path(data_dir), "test")
    if not 2 <= n < len(x_test) - 1:
        raise DiffSCMError(f"--n {n}: the benchmark needs 2 ≤ n < {len(x_test) - 1} (the rest are KID's real images)")
    src_test, _ = load_mnist("test")
    if len(src_test) != len(x_test):
        raise DiffSCMError(f"{data_dir} has {len(x_test)} test images, MNIST has {len(src_test)}: not a Morpho-MNIST test split")
    evaluation = json.loads((scm.path / "scm.json").read_text()).get("evaluation", {})
    if "vae" not in evaluation:
        raise DiffSCMError(f"model {scm.path} lacks the unconditional VAE of CLD (scm.json 'evaluation': vae)")
    x, attrs, source = x_test[:n], {k: v[:n] for k, v in a_test.items()}, src_test[:n]
    pool = {k: a_test[k] for k in CONTINUOUS}
    proto = MorphoProtocol(n=n, seeds=tuple(seeds), rev_seeds=tuple(seeds), rev_n=None if rev_n is None else min(rev_n, n),
                           comp_n=min(comp_n, n), protocol="cfbench")
    _, _, truth = plan(scm, attrs, pool, proto.seeds, "cfbench")
    true_cf = true_counterfactuals(source, truth, proto, cache, progress, workers, top)
    scorer = MorphoScorer(scm.oracles, load_model(scm.path / evaluation["vae"], scm.device), x_test, a_test,
                          x_test[n:], n_boot=n_boot, workers=workers, judges=load_judges(scm))
    judged = scorer.judge_attributes(x, attrs["intensity"])
    out = {"protocol": proto.key(), "n": n, "results": {}, "settings": {},
           "judges_on_factuals": {"digit_accuracy": float((judged["digit"] == attrs["digit"]).mean()),
                                  **{f"{k}_mae": float(np.abs(judged[k] - attrs[k]).mean()) for k in CONTINUOUS}}}
    for name, m in methods.items():
        gen = generate_morpho(m, scm, x, attrs, pool, proto, cache, progress, top)
        out["settings"][name] = m.settings()
        out["results"][name] = score_cfbench(gen, scorer, true_cf, np.arange(n))
    return out
