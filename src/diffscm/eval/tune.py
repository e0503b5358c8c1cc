"""Choose a fitted SCM's guidance defaults on validation images, judged by selection models, never by the oracles.

``diffscm fit`` trains a selection model of each image parent (an oracle of the same form with another seed; it
sees the parent's ``oracle_view``) and then calls :func:`tune_scm`. On the first ``n`` images of the ``val`` split,
each image parent is intervened on in turn with the evaluation's draw (``draw_generic``, seed 0); descendants
follow through the SCM's flows. One abduction serves every setting. The rule, fixed before any run:

* a setting's error is the mean, over the interventions do(P) and over the image parents Q, of the selection
  model's error on Q against Q's counterfactual value: 1 − accuracy for a categorical Q, the fraction of images
  read farther than half a bin (``metrics.tolerance``, of the support, else of the split's range) from the target
  for a continuous one;
* the weights (conditional mechanism: classifier-free w per parent) or scales (paper mechanism: s per predictor)
  are chosen one parent at a time, in the graph's order, over ``GRID``, the others held at their current values,
  starting from the packed defaults;
* a value whose error lies within ``TIE`` of the best counts as tied, and the gentlest of the tied values wins (the
  one closest to the unguided model: w = 1, s = 0);
* this search runs once per guidance scope of ``SCOPES`` (where the weights act: on the changed parents only, or on
  every parent of a sample with any change), each from the packed defaults; the scope of least error wins, and
  within ``TIE`` the narrower one (listed first).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DiffSCMError
from ..files import write_json_atomic
from ..scm.core import SCM
from .metrics import tolerance, within_hits

GRID = {"conditional": (1.0, 1.5, 2.0, 3.0, 4.5, 6.0), "paper": (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)}
N_TUNE = 64
TIE = 0.01
SCOPES = ("intervened", "changed")   # both abduct with the unguided ε, so one abduction serves every setting


def attribute_errors(scm: SCM, read: dict[str, np.ndarray], target: dict[str, np.ndarray],
                     tol: dict[str, float]) -> dict[str, float]:
    """Per image parent: 1 − accuracy (categorical) or the fraction read farther than ``tol[p]`` (continuous)."""
    out = {}
    for p in scm.graph.image.parents:
        hits = (np.asarray(read[p]) == np.asarray(target[p])).astype(np.float64) \
            if scm.graph.variables[p].kind == "categorical" else within_hits(read[p], target[p], tol[p])
        out[p] = float(1.0 - hits.mean())
    return out


def choose(parents: list[str], grid: tuple[float, ...], start: dict[str, float],
           error: Callable[[dict[str, float]], float], gentle: float, tie: float = TIE) -> dict[str, float]:
    """One pass of coordinate search: each parent in turn takes the grid value of least ``error`` with the others
    held; values within ``tie`` of the least count as tied, and the one closest to ``gentle`` wins."""
    values = dict(start)
    for p in parents:
        errs = {v: error({**values, p: v}) for v in grid}
        best = min(errs.values())
        values[p] = min((v for v, e in errs.items() if e <= best + tie), key=lambda v: abs(v - gentle))
    return values


def pick_scope(errors: dict[str, float], tie: float = TIE) -> str:
    """The scope of least error (``errors`` in ``SCOPES`` order); within ``tie`` of it, the one listed first."""
    least = min(errors.values())
    return next(s for s, e in errors.items() if e <= least + tie)


def _key(mechanism: str) -> str:
    return "cfg_weights" if mechanism == "conditional" else "scales"


def mean_error(errors: dict[str, dict[str, float]]) -> float:
    """The rule's error of a setting: the mean over the interventions and the parents read."""
    return float(np.mean([e for d in errors.values() for e in d.values()]))


class SelectionJudge:
    """The rule's judge: the counterfactuals of the ``val`` images ``[start, stop)`` of a dataset folder under each
    image parent's intervention (``draw_generic``, ``seed``), read by the selection models ``selectors`` (one
    folder per image parent). The latent of the last abduction is kept for the settings that share it."""

    def __init__(self, scm: SCM, data_dir: Path, selectors: dict[str, Path], start: int = 0, stop: int = N_TUNE,
                 seed: int = 0):
        from ..models import load_model
        from .protocols.generic import draw_generic, load_split
        from .protocols.morpho import counterfactual_attributes

        self.scm, self.seed, self.parents = scm, seed, list(scm.graph.image.parents)
        missing = [p for p in self.parents if p not in selectors]
        if missing:
            raise DiffSCMError(f"no selection model of {missing[0]} to judge with")
        self.models = {p: load_model(selectors[p], scm.device).eval() for p in self.parents}
        x_all, a_all, _ = load_split(scm, data_dir, "val")
        if not 0 <= start < min(stop, len(x_all)):
            raise DiffSCMError(f"val images {start}..{stop}: the split has {len(x_all)}")
        self.x, self.attrs = x_all[start:stop], {k: v[start:stop] for k, v in a_all.items()}
        self.n = len(self.x)
        do = draw_generic(scm, self.attrs, a_all, seed)
        self.target = {k: counterfactual_attributes(scm, self.attrs, d) for k, d in do.items()}
        self.tol = {p: tolerance(np.min(a_all[p]) if v.low is None else v.low,
                                 np.max(a_all[p]) if v.high is None else v.high)
                    for p, v in ((p, scm.graph.variables[p]) for p in self.parents) if v.kind == "continuous"}
        self._latent: tuple[str, object] | None = None
        self._errors: dict[str, dict[str, float]] = {}

    def read(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each image parent as its selection model reads it."""
        from .harness import batched_apply

        out = {}
        for p, m in self.models.items():
            if self.scm.graph.variables[p].kind == "categorical":
                out[p] = batched_apply(m, m, images).argmax(1).numpy()
            else:
                out[p] = batched_apply(m.predict, m, images).numpy().astype(np.float64)
        return out

    def method(self, opts):
        from .protocols.morpho import MorphoDiffSCM

        return MorphoDiffSCM(self.scm, opts)

    def latent(self, opts):
        """The abducted latent under ``opts`` (reused while the abduction key is the same)."""
        key = opts.abduction_key()
        if self._latent is None or self._latent[0] != key:
            self._latent = (key, self.method(opts).abduct(self.x, self.attrs))
        return self._latent[1]

    def effective(self, opts, kind: str) -> str:
        """A key of the prediction under do(``kind``): the abduction, the prediction-only options and, per sample,
        the weight and scale each parent decodes with. Settings with equal keys decode the same images, e.g. under
        ``intervened`` the digit's weight does not act on a do(hue) sample whose digit is unchanged."""
        d = {k: v for k, v in opts.__dict__.items() if k not in ("cfg_weights", "scales", "guidance", "batch_size")}
        d["abduction"] = opts.abduction_key()
        if opts.guidance in SCOPES and not opts.cfg_scale:
            on = {p: np.asarray(self.target[kind][p]) != np.asarray(self.attrs[p]) for p in self.parents}
            if opts.guidance == "changed":
                anywhere = np.any(list(on.values()), axis=0)
                on = {p: anywhere for p in on}
        else:
            d["guidance"] = opts.guidance
            on = {p: np.ones(self.n, bool) for p in self.parents}
        h = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode())
        for table, neutral in ((opts.cfg_weights, 1.0), (opts.scales, 0.0)):
            for p in sorted(set(table) | set(self.parents)):
                mask = on.get(p, np.ones(self.n, bool))
                h.update(p.encode() + np.where(mask, float(table.get(p, neutral)), neutral).tobytes())
        return f"{kind}:{h.hexdigest()}"

    def errors(self, opts) -> dict[str, dict[str, float]]:
        """Per intervened parent, per parent read: the selection model's error against the counterfactual value.
        A prediction already made with the same :meth:`effective` key is read back, not decoded again."""
        latent, method, errs = self.latent(opts), self.method(opts), {}
        for kind in self.parents:
            key = self.effective(opts, kind)
            if key not in self._errors:
                cf = method.predict(latent, self.target[kind], self.seed, factual=self.attrs)
                self._errors[key] = attribute_errors(self.scm, self.read(cf), self.target[kind], self.tol)
            errs[kind] = dict(self._errors[key])
        return errs


def tune_scm(scm_dir: Path, data_dir: Path, selectors: dict[str, Path], state: Path, n: int = N_TUNE, seed: int = 0,
             log: Callable[[str], None] = print, device: str = "cpu") -> dict | None:
    """Run the rule of the module docstring and write the chosen values into ``scm_dir/scm.json``'s defaults.

    ``state`` (a JSON file) keeps every scored setting, so an interrupted run resumes. Returns the record (the
    chosen values, every row, the images used), or None when the folder has no ``val`` rows to tune on."""
    from ..data.folder import has_split_column, read_table
    from ..models.io import weights_key

    if not has_split_column(data_dir) or "val" not in set(read_table(data_dir)[1]["split"].tolist()):
        return None
    scm = SCM.from_pretrained(scm_dir, device)
    base = scm.options()
    if base.guidance not in SCOPES:
        raise DiffSCMError(f"tuning needs guidance {' or '.join(SCOPES)} (one abduction serves every setting), "
                           f"not {base.guidance!r}")
    mechanism = scm.image_mechanism.mechanism(base)
    parents = list(scm.graph.image.parents)
    judge = SelectionJudge(scm, data_dir, selectors, 0, n, seed)
    key = _key(mechanism)
    start = {p: float(getattr(base, key).get(p, 1.0 if mechanism == "conditional" else 0.0)) for p in parents}
    ident = {"n": judge.n, "seed": seed, "mechanism": mechanism, "key": key,
             "weights": "-".join(weights_key(m) for m in [scm.image_mechanism.diffusion, *judge.models.values()])}
    record = json.loads(state.read_text()) if state.exists() else {}
    if any(record.get(k) != v for k, v in ident.items()):     # another model or protocol: start afresh
        record = {**ident, "rows": []}

    def row_key(scope: str, vals: dict[str, float]) -> str:
        return json.dumps({"guidance": scope, "values": vals}, sort_keys=True)

    for r in record["rows"]:     # rows of a record written before scopes were searched: the intervened scope's
        r.setdefault("guidance", "intervened")
    done = {row_key(r["guidance"], r["values"]): r for r in record["rows"]}

    def score(vals: dict[str, float], scope: str) -> float:
        k = row_key(scope, vals)
        if k in done:
            return done[k]["error"]
        t0 = time.time()
        errs = judge.errors(scm.options(guidance=scope, **{key: dict(vals)}))
        err = mean_error(errs)
        row = {"guidance": scope, "values": dict(vals), "error": err, "errors": errs, "seconds": time.time() - t0}
        record["rows"].append(row)
        done[k] = row
        write_json_atomic(state, record)
        log(f"tune {scope} {key} {vals}: error {err:.3f}")
        return err

    gentle = 1.0 if mechanism == "conditional" else 0.0
    best = {}
    for scope in SCOPES:
        vals = choose(parents, GRID[mechanism], start, lambda v, s=scope: score(v, s), gentle)
        best[scope] = {"values": vals, "error": score(vals, scope)}
    scope = pick_scope({s: b["error"] for s, b in best.items()})
    record.update(chosen=dict(best[scope]["values"]), guidance=scope, error=best[scope]["error"], scopes=best)
    write_json_atomic(state, record)
    cfg_path = Path(scm_dir) / "scm.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["defaults"][key] = dict(best[scope]["values"])
    cfg["defaults"]["guidance"] = scope
    write_json_atomic(cfg_path, cfg)
    return record


def tune_card(record: dict | None) -> list[str]:
    """Model-card lines for a tuning record."""
    if record is None:
        return ["- the guidance defaults were not tuned: the folder has no `val` rows"]
    key = "classifier-free weights w" if record["key"] == "cfg_weights" else "guidance scales s"
    rows = sorted(record["rows"], key=lambda r: r["error"])
    scope = record.get("guidance", "intervened")
    lines = [f"- {key} and guidance scope chosen on the first {record['n']} `val` images by selection models (not "
             f"the oracles), seed {record['seed']}: {record['chosen']}, guidance `{scope}` (error "
             f"{record['error']:.3f}; the rule: `diffscm.eval.tune`)",
             f"- {len(rows)} settings scored; the best five:"]
    lines += [f"  - {r['guidance']} {r['values']}: {r['error']:.3f}" for r in rows[:5]]
    return lines


def tune_fitted(out: Path, data_dir: Path, work: Path, log: Callable[[str], None] = print,
                device: str = "cpu") -> dict | None:
    """Tune a folder ``diffscm fit`` just packed, with the selection models in its work folder, and add the choice
    to its model card."""
    out, work = Path(out), Path(work)
    graph = json.loads((out / "scm.json").read_text())["graph"]
    parents = next(v["parents"] for v in graph["variables"] if v["kind"] == "image")
    record = tune_scm(out, data_dir, {p: work / "selection" / p for p in parents}, work / "tune.json", log=log,
                      device=device)
    card = out / "MODEL_CARD.md"
    text = card.read_text().split("\n## Defaults chosen on validation images\n")[0]
    card.write_text(text.rstrip("\n") + "\n\n## Defaults chosen on validation images\n\n" + "\n".join(tune_card(record)) + "\n")
    return record
