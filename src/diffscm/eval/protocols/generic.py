"""Evaluation of any SCM on a dataset folder (the SCMs ``diffscm fit`` writes, or any with oracles and a CLD VAE).

For the first ``n`` images of a split, one image parent at a time is intervened on, per seed: a categorical parent
moves to another class drawn uniformly, a continuous one to a value of the split drawn uniformly among those in
another of 9 equal bins over its range (the counterfactual benchmark's draw). Descendant attributes follow through
the SCM's flows. Scored per intervention, with 95% bootstrap CIs over images of the seed-averaged values:

* effectiveness of every image parent: the clean-image oracle's accuracy (categorical), or MAE and the fraction
  read within half a bin width (1/18 of the support) of the target (continuous), against the counterfactual value
  the method was asked for;
* CLD (weights 0.8/0.2; the intervened parent, binned when continuous; the real pool is the whole split);
* reversibility: L1 (0–255) of abduct-then-predict back under the factual parents, on the first ``rev_n`` images;
* KID on the first oracle's penultimate features against the split's images beyond the first ``n`` (absent when
  the split has fewer than 2 more);
* images per second (abduction + prediction);
* where the folder's generator is known (``dataset.json`` ``generator``: Colour-MNIST, Morpho-MNIST), the L1
  (0–255) of each counterfactual against its true counterfactual, on the images that have one (a new digit has
  none);

and, per method, composition: L1 (0–255) after m = 1 null intervention on all ``n`` images and after m = 10 on
the first ``comp_n``. A folder without a split column is evaluated on all its rows.

Where the folder has ``masks/`` and the SCM a binary image parent (``lesion``), :func:`localize_generic` adds the
weakly supervised localisation task of "What is Healthy?": the healthy counterfactual do(lesion = 0) of every
image, abducted with its lesion status unknown (the ε-model's null token), the anomaly map |x − x_h| (mean over
channels), the Dice threshold chosen on ``val`` images and applied to the test images, pixel AUPRC and image
AUROC (the mean of each map's 10 largest values).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...distributed import Topology
from ...errors import DiffSCMError
from ...scm.core import SCM
from ..harness import batched_apply, generate_chunks
from ..metrics import bootstrap_ci, cld, kernel_distance, l1_255, tolerance, within_hits
from .morpho import MorphoDiffSCM, _folder, _values_hash, bin_edges, counterfactual_attributes, draw_values, to_bins

N_BINS = 9


@dataclass
class GenericProtocol:
    n: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)
    rev_n: int = 100
    comp_n: int = 100
    comp_m: tuple[int, ...] = (1, 10)
    chunk: int = 100

    def key(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def draw_generic(scm: SCM, attrs: dict[str, np.ndarray], pool: dict[str, np.ndarray], seed: int) -> dict[str, dict]:
    """do() values for each image parent on its own (see the module docstring)."""
    out = {}
    for k, p in enumerate(scm.graph.image.parents):
        var, rng = scm.graph.variables[p], np.random.default_rng([seed, 200 + k])
        v = np.asarray(attrs[p])
        if var.kind == "categorical":
            out[p] = {p: (v.astype(np.int64) + rng.integers(1, var.num_classes, len(v))) % var.num_classes}
        elif np.ptp(pool[p]) == 0:
            raise DiffSCMError(f"{p} takes one value only in this split: there is no other value to intervene with")
        else:
            out[p] = {p: draw_values(v.astype(np.float64), np.unique(pool[p]), rng, N_BINS)}
    return out


def generate_generic(method, scm: SCM, x_u8: np.ndarray, attrs: dict[str, np.ndarray], target: dict, proto: GenericProtocol,
                     cache: Path | None, progress: bool = True, top: Topology | None = None) -> dict:
    """Counterfactuals per seed × intervened parent, their reversals and the null-intervention compositions, in
    cached chunks (resumable; shared out over the ranks of a multi-process ``top``)."""
    kinds = list(scm.graph.image.parents)
    folder = _folder(cache, f"generic-{method.name}", {"method": method.settings(), "protocol": proto.key(),
                                                        "targets": _values_hash(target)})
    return generate_chunks(method, x_u8, attrs, target, kinds, proto.seeds, folder, proto.chunk, None, proto.rev_n,
                           proto.comp_n, proto.comp_m, progress, top)


def _summary(cols: list[np.ndarray], n_boot: int) -> dict:
    """Per-image values of each seed → mean over seeds, 95% bootstrap CI over images of the seed means."""
    arr = np.stack(cols, 1).astype(np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = np.nanmean(arr, 1)
    d = {"mean": float(np.nanmean(rows)), "per_seed": [float(np.nanmean(arr[:, j])) for j in range(arr.shape[1])],
         "n": int(np.isfinite(rows).sum()), "seeds": int(arr.shape[1])}
    ok = rows[np.isfinite(rows)]
    d["ci_low"], d["ci_high"] = bootstrap_ci(ok, seed=0, n_boot=n_boot) if len(ok) > 1 else (float("nan"),) * 2
    return d


class _Oracles:
    def __init__(self, scm: SCM):
        missing = [p for p in scm.graph.image.parents if p not in scm.oracles]
        if missing:
            raise DiffSCMError(f"model {scm.path} has no oracle of {missing[0]}: evaluation judges every image parent "
                               "with a clean-image oracle (`diffscm fit` trains them)")
        self.scm = scm

    def read(self, images_u8: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for p in self.scm.graph.image.parents:
            o = self.scm.oracles[p]
            if self.scm.graph.variables[p].kind == "categorical":
                out[p] = batched_apply(o, o, images_u8).argmax(1).numpy()
            else:
                out[p] = batched_apply(o.predict, o, images_u8).numpy().astype(np.float64)
        return out

    def features(self, images_u8: np.ndarray) -> np.ndarray:
        o = self.scm.oracles[self.scm.graph.image.parents[0]]
        return batched_apply(o.features, o, images_u8).double().numpy()


def _colour_truth(split: str, src: np.ndarray, attrs: dict, do: dict, cf: dict):
    from ...data.colour_mnist import true_counterfactuals

    return true_counterfactuals(split, src, attrs["digit"], cf)


def _morpho_truth(split: str, src: np.ndarray, attrs: dict, do: dict, cf: dict):
    from ...data import morphomnist as mm
    from ...data.mnist import load_mnist

    ok = np.asarray(cf["digit"]) == np.asarray(attrs["digit"])       # a new digit has no true image
    if not ok.any():
        return np.zeros((len(src), 28, 28), np.uint8), ok
    x, _ = load_mnist("test" if split == "test" else "train+valid")
    t, i = mm.true_counterfactual_values(attrs["thickness"], attrs["intensity"], do.get("thickness"), do.get("intensity"))
    return mm.render_batch(x[src], t, i), ok


# the dataset generators whose true counterfactuals are known: dataset.json "generator" -> renderer
TRUTH = {"diffscm.data.colour_mnist": _colour_truth, "diffscm.data.morphomnist": _morpho_truth}


def true_images(data_dir: Path, split: str | None, n: int, attrs: dict, do: dict, target: dict) -> dict | None:
    """{(seed, parent): (true counterfactual images, mask of the rows that have one)} for a folder whose generator
    is in :data:`TRUTH`, else None."""
    from ...data.folder import read_table

    _, table, info = read_table(data_dir, split)
    render = TRUTH.get(info.get("generator"))
    if render is None or "source_index" not in table or split is None:
        return None
    src = np.asarray(table["source_index"][:n], dtype=np.int64)
    return {(s, kind): render(split, src, attrs, do[s][kind], t) for s, per in target.items() for kind, t in per.items()}


def score_generic(scm: SCM, gen: dict, x_u8: np.ndarray, attrs: dict, target: dict, vae, ref_images: np.ndarray,
                  ref_attrs: dict, real_images: np.ndarray, n_boot: int = 1000, weights=(0.8, 0.2),
                  truth: dict | None = None) -> dict:
    """The metrics of the module docstring from the generated images."""
    oracles, parents = _Oracles(scm), list(scm.graph.image.parents)
    seeds = sorted({s for s, _ in gen["cf"]})
    n = len(x_u8)

    def posterior(images):
        stats = batched_apply(lambda x: torch.cat(vae.encode(x), dim=1), vae, images).double()
        return stats.chunk(2, dim=1)

    def group(values: dict, p: str) -> np.ndarray:
        v = np.asarray(values[p])
        return v.astype(np.int64) if scm.graph.variables[p].kind == "categorical" else to_bins(v, edges[p])

    edges = {p: bin_edges(ref_attrs[p], N_BINS) for p in parents if scm.graph.variables[p].kind == "continuous"}
    tol = {}        # half a bin of the support (of the split's range where the graph leaves the support open)
    for p in edges:
        var = scm.graph.variables[p]
        tol[p] = tolerance(np.min(ref_attrs[p]) if var.low is None else var.low,
                           np.max(ref_attrs[p]) if var.high is None else var.high, N_BINS)
    post_x, post_ref = posterior(x_u8), posterior(ref_images)
    ref_offset = np.arange(n)            # the factuals are the first n images of the pool: each leaves itself out
    real_feats = oracles.features(real_images) if len(real_images) >= 2 else None
    res: dict = {"interventions": {}}
    for kind in parents:
        cols: dict[str, list[np.ndarray]] = {}
        kid = []
        for s in seeds:
            cf, tgt = gen["cf"][(s, kind)], target[s][kind]
            read = oracles.read(cf)
            for p in parents:
                if scm.graph.variables[p].kind == "categorical":
                    cols.setdefault(f"{p}_accuracy", []).append((read[p] == np.asarray(tgt[p])).astype(np.float64))
                else:
                    cols.setdefault(f"{p}_mae", []).append(np.abs(read[p] - np.asarray(tgt[p], dtype=np.float64)))
                    cols.setdefault(f"{p}_within", []).append(within_hits(read[p], tgt[p], tol[p]))
            cols.setdefault("cld", []).append(cld(post_x, posterior(cf), post_ref, group(attrs, kind), group(tgt, kind),
                                                  group(ref_attrs, kind), ref_offset, weights))
            if truth is not None and truth[(s, kind)][1].any():
                img, ok = truth[(s, kind)]
                cols.setdefault("true_l1", []).append(np.where(ok, l1_255(img, cf), np.nan))
            if (s, kind) in gen["rev"]:
                rev = gen["rev"][(s, kind)]
                cols.setdefault("reversibility_l1", []).append(l1_255(x_u8[:len(rev)], rev))
            if real_feats is not None:
                kid.append(kernel_distance(real_feats, oracles.features(cf), seed=s))
        r = {k: _summary(v, n_boot) for k, v in cols.items()}
        if kid:
            r["kid_oracle"] = {"mean": float(np.mean([k[0] for k in kid])), "std": float(np.mean([k[1] for k in kid])),
                               "per_seed": [k[0] for k in kid], "ci_low": min(k[0] for k in kid),
                               "ci_high": max(k[0] for k in kid), "note": "range over seeds; subset std in 'std'"}
        ips = [n / (gen["seconds"].get("abduct", 0.0) + gen["seconds"][f"cf_{s}_{kind}"]) for s in seeds]
        r["images_per_s"] = {"mean": float(np.mean(ips)), "per_seed": ips, "ci_low": min(ips), "ci_high": max(ips),
                             "note": "range over seeds"}
        res["interventions"][kind] = r
    for m, imgs in sorted(gen["comp"].items()):
        res[f"composition_l1_{m}"] = _summary([l1_255(x_u8[:len(imgs)], imgs)], n_boot)
    return res


def load_split(scm: SCM, data_dir: Path, split: str | None) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """uint8 images and the graph's attribute columns of one split of a dataset folder, checked against the graph."""
    from ...data.folder import LABELS_CSV, has_split_column, load_folder, read_table

    data_dir = Path(data_dir)
    split = split if has_split_column(data_dir) else None
    files, table, _ = read_table(data_dir, split)
    scm.graph.check_table(files, table, str(data_dir / LABELS_CSV))
    ds = load_folder(data_dir, split=split, masks=False)
    shape = tuple(scm.image_mechanism.diffusion.image_shape)
    if ds.images.shape[1:] != shape:
        raise DiffSCMError(f"images of {data_dir} are {'×'.join(map(str, ds.images.shape[1:]))}, the model's "
                           f"{'×'.join(map(str, shape))}")
    names = [v for v in scm.graph.variables if v != scm.image_name]
    attrs = {k: np.asarray(ds.table[k], dtype=np.int64 if scm.graph.variables[k].kind == "categorical" else np.float64)
             for k in names}
    x_u8 = np.round(ds.images * 255).astype(np.uint8)
    return (x_u8[:, 0] if x_u8.shape[1] == 1 else x_u8), attrs, split or "all"   # grey as N×H×W, as elsewhere


def run_generic(scm: SCM, data_dir: Path, split: str | None, n: int, seeds: tuple[int, ...], comp_n: int, rev_n: int,
                cache: Path | None, progress: bool = True, n_boot: int = 1000, top: Topology | None = None,
                overrides: dict | None = None) -> dict:
    """Generate and score Diff-SCM's counterfactuals on the first ``n`` images of ``split`` (see the module
    docstring); the SCM's defaults with ``overrides``."""
    from ...models import load_model

    _Oracles(scm)                         # every image parent has its oracle, before any generation
    x_all, a_all, split_name = load_split(scm, data_dir, split)
    if not 2 <= n <= len(x_all):
        raise DiffSCMError(f"--n {n}: the split has {len(x_all)} images (need 2 ≤ n ≤ {len(x_all)})")
    evaluation = json.loads((scm.path / "scm.json").read_text()).get("evaluation", {})
    if "vae" not in evaluation:
        raise DiffSCMError(f"model {scm.path} lacks the unconditional VAE of CLD (scm.json 'evaluation': vae)")
    x, attrs = x_all[:n], {k: v[:n] for k, v in a_all.items()}
    proto = GenericProtocol(n=n, seeds=tuple(seeds), rev_n=min(rev_n, n), comp_n=min(comp_n, n))
    target, do = {}, {}
    for s in proto.seeds:
        do[s] = draw_generic(scm, attrs, a_all, s)
        target[s] = {k: counterfactual_attributes(scm, attrs, d) for k, d in do[s].items()}
    method = MorphoDiffSCM(scm, scm.options(**{k: v for k, v in (overrides or {}).items() if v is not None}))
    gen = generate_generic(method, scm, x, attrs, target, proto, cache, progress, top)
    vae = load_model(scm.path / evaluation["vae"], scm.device).eval()
    truth = true_images(data_dir, split_name if split_name != "all" else None, n, attrs, do, target)
    res = score_generic(scm, gen, x, attrs, target, vae, x_all, a_all, x_all[n:], n_boot, truth=truth)
    parent = localization_parent(scm, data_dir)
    if parent is not None and split_name != "all" and (top is None or top.is_main):
        res["localization"] = localize_generic(scm, data_dir, parent, n, n, method.opts, split_name)
    return {"protocol": proto.key(), "split": split_name, "data": str(data_dir), "settings": method.settings(),
            "results": res}


def localization_parent(scm: SCM, data_dir: Path) -> str | None:
    """The binary image parent whose do(· = 0) is the healthy counterfactual, where the folder has masks and the
    SCM exactly one binary categorical image parent; else None."""
    if not (Path(data_dir) / "masks").is_dir():
        return None
    binary = [p for p in scm.graph.image.parents if scm.graph.variables[p].kind == "categorical"
              and scm.graph.variables[p].num_classes == 2]
    return binary[0] if len(binary) == 1 else None


def localize_generic(scm: SCM, data_dir: Path, parent: str, n_val: int, n_test: int, opts, test_split: str = "test",
                     top: int = 10) -> dict:
    """The localisation task of the module docstring on the first ``n_val`` val and ``n_test`` test images."""
    from ...data.folder import load_folder
    from ..localize import anomaly_map
    from ..metrics.localization import auroc, average_precision, best_threshold, image_scores, mean_dice

    method = MorphoDiffSCM(scm, opts)
    names = [v for v in scm.graph.variables if v != scm.image_name]
    out = {}
    for split, n in (("val", n_val), (test_split, n_test)):
        ds = load_folder(data_dir, split=split, masks=True)
        if ds.masks is None:
            raise DiffSCMError(f"{data_dir} has no masks/ folder: localisation needs ground-truth masks")
        k = min(n, len(ds))
        x_u8 = np.round(ds.images[:k] * 255).astype(np.uint8)
        x_in = x_u8[:, 0] if x_u8.shape[1] == 1 else x_u8
        attrs = {a: np.asarray(ds.table[a][:k], dtype=np.int64 if scm.graph.variables[a].kind == "categorical"
                               else np.float64) for a in names}
        # the lesion status is what the task must find: abduct with it unknown (the null token), decode with 0
        target = counterfactual_attributes(scm, attrs, {parent: np.zeros(k, np.int64)})
        blind = {**attrs, parent: np.full(k, np.nan)}
        x_h = method.predict(method.abduct(x_in, blind), target, 0, factual=blind)
        x_h = x_h[:, None] if x_h.ndim == 3 else x_h
        out[split] = (anomaly_map(x_u8 / 255.0, x_h / 255.0), ds.masks[:k], attrs[parent])
    (vm, vmask, _), (tm, tmask, tlab) = out["val"], out[test_split]
    tau, val_dice = best_threshold(vm, vmask)
    return {"parent": parent, "n_val": int(len(vm)), "n_test": int(len(tm)), "threshold": tau, "val_dice": val_dice,
            "dice": mean_dice(tm, tmask, tau), "auprc": average_precision(tm, tmask),
            "auroc": auroc(image_scores(tm, top), tlab)}


def generic_table(res: dict) -> str:
    """Markdown: one row per intervened parent, one column per metric (mean [95% CI])."""
    from ..report import md_table

    inter = res["results"]["interventions"]
    cols = list(dict.fromkeys(k for r in inter.values() for k in r))
    rows = []
    for kind, r in inter.items():
        row = [f"do({kind})"]
        for c in cols:
            m = r.get(c)
            row.append("—" if m is None else (f"{m['mean']:.3g}" if c in ("images_per_s", "kid_oracle") or
                                                 not np.isfinite(m.get("ci_low", np.nan))
                                                 else f"{m['mean']:.3g} [{m['ci_low']:.3g}, {m['ci_high']:.3g}]"))
        rows.append(row)
    comp = [f"m = {k.rsplit('_', 1)[1]}: {v['mean']:.3g} [{v['ci_low']:.3g}, {v['ci_high']:.3g}] (n = {v['n']})"
            for k, v in res["results"].items() if k.startswith("composition_l1_")]
    text = md_table(["intervention", *cols], rows) + "\n\nComposition L1 (0–255): " + "; ".join(comp) + "\n"
    loc = res["results"].get("localization")
    if loc:
        text += (f"\nLocalisation by the healthy counterfactual do({loc['parent']} = 0): Dice {loc['dice']:.3f} at the "
                 f"threshold chosen on {loc['n_val']} val images, pixel AUPRC {loc['auprc']:.3f}, image AUROC "
                 f"{loc['auroc']:.3f} ({loc['n_test']} test images)\n")
    return text
