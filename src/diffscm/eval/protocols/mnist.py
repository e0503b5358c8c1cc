"""The MNIST counterfactual evaluation (``diffscm evaluate``) and the settings sweep (``diffscm sweep``)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..baselines import CVAEMethod, PrototypeMethod, PrototypeParams
from ...data import load_mnist
from ...data.mnist import cache_dir
from ...distributed import topology
from ...errors import DiffSCMError
from ..harness import METRIC_KEYS, DiffSCMMethod, EvalProtocol, Scorer, generate, oracle_features, score
from ..metrics import frechet_distance, kernel_distance
from ...models import VAE, Classifier
from ...files import write_json_atomic
from ...scm.core import SCM

METHODS = ("diffscm", "diffscm-paper", "diffscm-reference", "cvae", "prototype")
# The reference implementation's setting: the paper's mechanism, 75 + 75 steps of a 100-step grid, L = 0.75, s = 1,
# dynamic normalisation, explicit DDIM inversion of the unconditional ε.
REFERENCE_OPTIONS = {"mechanism": "paper", "steps": 100, "ratio": 0.75, "scale": 1.0, "dynamic_norm": True,
                     "clip": False, "inversion": "ddim", "abduction": "null"}
EVAL_MODELS = ("vae", "cvae", "autoencoder", "classifier")


def eval_model_paths(scm: SCM) -> dict[str, Path]:
    """Folders of the evaluation/baseline models listed under ``evaluation`` in the SCM's ``scm.json``."""
    cfg = json.loads((scm.path / "scm.json").read_text())
    paths = {k: scm.path / v for k, v in (cfg.get("evaluation") or {}).items()}
    missing = [k for k in EVAL_MODELS if k not in paths or not paths[k].exists()]
    if missing:
        raise DiffSCMError(f"model {scm.path} lacks evaluation models: {', '.join(missing)} (scm.json 'evaluation')")
    return paths


def make_method(name: str, scm: SCM, overrides: dict, paths: dict[str, Path], train=None,
                proto_params: PrototypeParams | None = None):
    """A harness method by name; ``diffscm`` uses the model defaults with ``overrides``."""
    if name == "diffscm":
        return DiffSCMMethod(scm, scm.options(**overrides), "diffscm")
    if name == "diffscm-paper":   # the paper's mechanism with its own shipped defaults
        return DiffSCMMethod(scm, scm.options(mechanism="paper", batch_size=overrides.get("batch_size")),
                             "diffscm-paper")
    if name == "diffscm-reference":
        return DiffSCMMethod(scm, scm.options(**{**REFERENCE_OPTIONS, "batch_size": overrides.get("batch_size")}),
                             "diffscm-reference")
    dev = scm.device
    if name == "cvae":
        return CVAEMethod(VAE.from_pretrained(paths["cvae"], dev))
    if name == "prototype":
        x_tr, y_tr = train
        return PrototypeMethod(Classifier.from_pretrained(paths["classifier"], dev),
                               VAE.from_pretrained(paths["autoencoder"], dev), x_tr, y_tr, proto_params)
    raise DiffSCMError(f"unknown method {name!r} (choose from {', '.join(METHODS)})")


FID_REFERENCE = 10000  # held-out valid images whose judge features define the real distribution of KID/FID
JUDGES = ("oracle", "selection")


def selection_judge(paths: dict[str, Path]) -> Path:
    """The classifier that judges settings on validation data: ``selector`` where the SCM ships one (a classifier
    no method uses, so that the prototype baseline, which optimises against ``classifier``, is not judged by its own
    guide), else ``classifier``."""
    return paths.get("selector") or paths["classifier"]


def real_reference(split: str, n: int, data_dir: Path | None, limit: int) -> np.ndarray:
    """Held-out real images for KID/FID: the ``valid`` split (never trained on), minus the evaluated images when
    the evaluation itself runs on ``valid``."""
    x_val, _ = load_mnist("valid", data_dir)
    return (x_val[n:] if split == "valid" else x_val)[:limit]


def _prepare(scm: SCM, split: str, n: int, data_dir: Path | None, n_boot: int, fid_reference: int,
             judge: str = "oracle"):
    """Load the split and the training images once, check n, build the scorer (CLD pool = the split).

    ``judge``: ``oracle`` (the evaluation oracle) or ``selection`` (a separately trained classifier, so that settings
    chosen on validation data are not chosen by the model that scores the final table)."""
    if judge not in JUDGES:
        raise DiffSCMError(f"--judge {judge!r}: use {' or '.join(JUDGES)}")
    if scm.oracle is None:
        raise DiffSCMError(f"model {scm.path} has no oracle: effectiveness cannot be measured")
    x_all, y_all = load_mnist(split, data_dir)
    if n > len(x_all):
        raise DiffSCMError(f"--n {n} exceeds the {len(x_all)} images of the {split} split")
    paths = eval_model_paths(scm)
    train = load_mnist("train", data_dir)
    vae = VAE.from_pretrained(paths["vae"], scm.device)
    model = scm.oracle if judge == "oracle" else Classifier.from_pretrained(selection_judge(paths), scm.device)
    scorer = Scorer.build(model, vae, x_all, y_all, real_reference(split, n, data_dir, fid_reference),
                          ref_offset=np.arange(n), n_boot=n_boot)
    return x_all, y_all, paths, train, scorer


def run_evaluate(scm: SCM, methods: list[str], overrides: dict, n: int, seeds: list[int], split: str,
                 comp_n: int, json_out: Path | None, report: Path | None, cache: Path | None,
                 data_dir: Path | None, progress: bool = True, n_boot: int = 1000,
                 proto_params: PrototypeParams | None = None,
                 fid_reference: int = FID_REFERENCE) -> tuple[list[dict], dict, dict]:
    """Generate (cached, resumable) and score every method; write the JSON and the report."""
    x_all, y_all, paths, train, scorer = _prepare(scm, split, n, data_dir, n_boot, fid_reference)
    proto = EvalProtocol(n=n, split=split, seeds=tuple(seeds), comp_n=min(comp_n, n))
    results, generated = [], {}
    top = topology()
    for name in methods:
        method = make_method(name, scm, overrides, paths, train, proto_params)
        gen = generate(method, x_all[:n], y_all[:n], proto, cache=cache, progress=progress, top=top)
        if not top.is_main:
            continue       # rank 0 scores and writes; the others only generated their share
        generated[name] = gen
        res = {"method": name, "settings": method.settings(), "protocol": proto.key(), "n": n,
               "metrics": score(gen, scorer), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        results.append(res)
    if not top.is_main:
        return [], {}, {}
    real = {"method": f"real {split} images", "n": n, **_real_realism(scorer, x_all[:n])}
    write_outputs(results, generated, real, json_out, report)
    return results, generated, real


def write_outputs(results: list[dict], generated: dict, real: dict, json_out: Path | None, report: Path | None) -> None:
    """JSON (the single-method shape, or ``{"methods": [...]}``) and the report folder."""
    if json_out is not None:
        payload = _flat(results[0]) if len(results) == 1 else {"methods": [_flat(r) for r in results]}
        payload["reference"] = real
        write_json_atomic(json_out, payload)
    if report is not None:
        from ..figures import write_evaluation_report

        write_evaluation_report(report, results, generated, real)


def _real_realism(scorer: Scorer, x_u8: np.ndarray) -> dict:
    """KID and FID of real images of the same size: the floor a method can reach."""
    f = oracle_features(scorer.oracle, x_u8)
    kid, kid_std = kernel_distance(scorer.real_features, f)
    return {"fid_oracle_real": frechet_distance(scorer.real_features, f), "kid_oracle_real": kid,
            "kid_oracle_real_std": kid_std}


def _flat(res: dict) -> dict:
    """The JSON shape of one method: each metric key at the top level with mean/ci_low/ci_high/per_seed."""
    out = {k: res["metrics"].get(k) for k in METRIC_KEYS}
    out.update({k: v for k, v in res["metrics"].items() if k not in METRIC_KEYS})
    out.update({k: res[k] for k in ("method", "settings", "protocol", "n", "finished")})
    return out


def default_cache() -> Path:
    return cache_dir() / "evaluate"


SWEEP_PARAMS = ("scale", "steps", "ratio", "w", "inversion_iters")


def run_sweep(scm: SCM, param: str, values: list[float], overrides: dict, n: int, seed: int, split: str,
              json_out: Path | None, report: Path | None, cache: Path | None, data_dir: Path | None,
              progress: bool = True, n_boot: int = 1000, fid_reference: int = FID_REFERENCE,
              judge: str = "selection") -> list[dict]:
    """Diff-SCM counterfactuals of the first ``n`` images of ``split`` for each value of ``param``; CLD, effectiveness,
    realism, judged by the selection classifier unless ``judge="oracle"``."""
    if param not in SWEEP_PARAMS:
        raise DiffSCMError(f"--param {param!r}: choose {', '.join(SWEEP_PARAMS)}")
    x_all, y_all, _, _, scorer = _prepare(scm, split, n, data_dir, n_boot, fid_reference, judge)
    proto = EvalProtocol(n=n, split=split, seeds=(seed,), comp_m=(1,), comp_n=0, phases=("counterfactual",))
    memo: dict = {}
    results, generated = [], []
    top = topology()
    for v in values:
        cast = int(v) if param in ("steps", "inversion_iters") else float(v)
        if param == "w":
            opts = scm.options(**{**overrides, "cfg_weights": {n: cast for n in scm.image_mechanism.diffusion.parent_names}})
        else:
            opts = scm.options(**{**overrides, param: cast})
        method = DiffSCMMethod(scm, opts, "diffscm", abduction_memo=memo)
        gen = generate(method, x_all[:n], y_all[:n], proto, cache=cache, progress=progress, top=top)
        if not top.is_main:
            continue
        generated.append(gen)
        metrics = score(gen, scorer)
        metrics.pop("images_per_s", None)  # abduction is shared across values, so per-value timing would mislead
        results.append({"param": param, "value": cast, "settings": method.settings(), "n": n, "split": split,
                        "seed": seed, "judge": judge, "metrics": metrics})
    if not top.is_main:
        return []
    if json_out is not None:
        write_json_atomic(json_out, {"param": param, "values": values, "results": results})
    if report is not None:
        from ..figures import write_sweep_report

        write_sweep_report(report, param, results, generated)
    return results
