"""Assemble trained checkpoints into an SCM folder (``scm.json`` + one sub-folder per model)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import DiffSCMError
from .graph import MNIST_GRAPH, CausalGraph
from ..files import atomic_write_dir
from ..models.io import CONFIG_NAME, WEIGHTS_NAME, load_config



def training_summary(ckpt: Path) -> dict | None:
    """Steps, wall time (summed over resumed segments) and final loss from a checkpoint's trainer state; a part
    taken from an already packed folder keeps its ``training.json``."""
    state = ckpt / "trainer_state.json"
    if not state.exists():
        packed = ckpt / "training.json"
        return json.loads(packed.read_text()) if packed.exists() else None
    meta = json.loads(state.read_text())
    wall, last = 0.0, 0.0
    for rec in meta["history"]:
        if rec["elapsed_s"] < last:  # a resumed segment restarts its clock
            wall += last
        last = rec["elapsed_s"]
    wall += last
    cfg = load_config(ckpt)
    return {"steps": meta["step"], "wall_seconds": round(wall, 1), "final_loss": meta["history"][-1]["loss"],
            "train": meta["train"], "segments": meta.get("segments", []), **{k: v for k, v in cfg.get("meta", {}).items() if k not in ("train", "step")}}


EVAL_KINDS = {"vae": "vae", "cvae": "vae", "autoencoder": "vae", "classifier": "classifier", "selector": "classifier",
              "healthy-diffusion": "diffusion", "judge-digit": "judge", "judge-thickness": "judge",
              "judge-intensity": "judge"}


def pack_scm(out: Path, graph: dict, diffusion: Path, predictors: dict[str, Path], defaults: dict,
             oracles: dict[str, Path] | None = None, flows: dict[str, Path] | None = None, overwrite: bool = False,
             extra_files: dict[str, str] | None = None, evaluation: dict[str, Path] | None = None,
             mechanism_defaults: dict[str, dict] | None = None) -> None:
    """Copy weights + configs of each model and write ``scm.json``.

    ``predictors``: one noise-aware predictor per image parent; ``flows``: the mechanism of each continuous
    attribute; ``oracles``: clean-image classifier/regressors for evaluation; ``evaluation``: the harness's models
    (``vae`` for CLD; ``cvae``, ``autoencoder``, ``classifier`` for the baselines; ``selector``, the judge of settings
    on validation data; ``judge-NAME``, the counterfactual benchmark's judges) under ``eval/``.
    """
    if Path(out).exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    g = CausalGraph.from_dict(graph)
    oracles, flows = oracles or {}, flows or {}
    image_parents = set(g.image.parents)
    for name in predictors:
        if name not in image_parents:
            raise DiffSCMError(f"predictor {name!r} is not a parent of the image ({', '.join(g.image.parents)})")
    for v in g.variables.values():
        if v.kind == "continuous" and v.parents and v.name not in flows:
            raise DiffSCMError(f"continuous variable {v.name!r} has parents, so it needs a flow (--flow {v.name}=DIR)")
    for name in flows:
        if name not in g.variables or g.variables[name].kind != "continuous":
            raise DiffSCMError(f"flow {name!r} is not a continuous variable of the graph")
    single = len(predictors) == 1 and not flows and len(oracles) <= 1
    parts = {"diffusion": (diffusion, "diffusion")}
    pred_dirs, oracle_dirs, flow_dirs = {}, {}, {}
    for name, src in predictors.items():
        pred_dirs[name] = "predictor" if single else f"predictors/{name}"
        parts[pred_dirs[name]] = (src, "predictor")
    for name, src in oracles.items():
        oracle_dirs[name] = "oracle" if single else f"oracles/{name}"
        parts[oracle_dirs[name]] = (src, "oracle" if g.variables[name].kind == "categorical" else "regressor")
    for name, src in flows.items():
        flow_dirs[name] = f"flows/{name}"
        parts[flow_dirs[name]] = (src, "flow")
    for name, src in (evaluation or {}).items():
        if name not in EVAL_KINDS:
            raise DiffSCMError(f"unknown evaluation model {name!r} (expected {', '.join(EVAL_KINDS)})")
        parts[f"eval/{name}"] = (src, EVAL_KINDS[name])
    for _, (src, kind) in parts.items():
        load_config(src, expected_kind=kind)
    for name, src in predictors.items():
        var, pcfg = g.variables[name], load_config(src)
        if var.kind == "categorical" and pcfg.get("num_classes") != var.num_classes:
            raise DiffSCMError(f"predictor {name!r} has {pcfg.get('num_classes')} classes, the graph's {name} {var.num_classes}")
    cfg = {"graph": graph, "image": {"diffusion": "diffusion", "predictors": pred_dirs}, "defaults": defaults}
    dcfg = load_config(diffusion)
    if dcfg.get("num_classes"):
        cond = dcfg.get("label") or (g.image.parents[0] if len(g.image.parents) == 1 else None)
        var = g.variables.get(cond) if cond else None
        if var is None or var.kind != "categorical" or var.num_classes != dcfg["num_classes"]:
            raise DiffSCMError(f"the conditional diffusion model's label {cond!r} is not a categorical image parent "
                               f"with {dcfg['num_classes']} classes")
        cfg["image"]["condition"] = cond
    for spec in dcfg.get("parents") or []:
        var = g.variables.get(spec["name"])
        if var is None or spec["name"] not in g.image.parents or var.kind != spec["kind"] or \
                (var.kind == "categorical" and var.num_classes != spec.get("num_classes")):
            raise DiffSCMError(f"the diffusion model is conditioned on {spec['name']!r} ({spec['kind']}), which is not "
                               f"a matching parent of the graph's image ({', '.join(g.image.parents)})")
    if mechanism_defaults:
        cfg["mechanism_defaults"] = mechanism_defaults
    if flow_dirs:
        cfg["attributes"] = flow_dirs
    if single:
        cfg["oracle"] = oracle_dirs.get(next(iter(predictors)), None) if oracles else None
    else:
        cfg["oracles"] = oracle_dirs
    if evaluation:
        cfg["evaluation"] = {name: f"eval/{name}" for name in evaluation}

    def write(tmp: Path) -> None:
        for name, (src, _) in parts.items():
            (tmp / name).mkdir(parents=True)
            for f in (CONFIG_NAME, WEIGHTS_NAME):
                shutil.copy(Path(src) / f, tmp / name / f)
            summary = training_summary(Path(src))
            if summary:
                (tmp / name / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "scm.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text)

    atomic_write_dir(out, write)


def pack_mnist_scm(out: Path, diffusion: Path, predictor: Path, oracle: Path | None, defaults: dict,
                   overwrite: bool = False, extra_files: dict[str, str] | None = None,
                   evaluation: dict[str, Path] | None = None) -> None:
    """digit -> image SCM folder (see :func:`pack_scm`)."""
    pack_scm(out, MNIST_GRAPH, diffusion, {"digit": predictor}, defaults,
             oracles={"digit": oracle} if oracle is not None else None, overwrite=overwrite,
             extra_files=extra_files, evaluation=evaluation)


def card_parts(pack: Path, parts: list[str], prose: dict[str, str]) -> tuple[list[str], list[list]]:
    """Model-card markdown of each shipped part (prose, data, optimiser, commands, wall time) and summary rows,
    read from the parts' ``training.json`` and weights — nothing typed by hand except ``prose``."""
    import platform

    from safetensors.torch import load_file

    lines, rows = [], []
    for part in parts:
        d = Path(pack) / part
        tr = json.loads((d / "training.json").read_text())
        n_params = sum(t.numel() for t in load_file(str(d / WEIGHTS_NAME)).values())
        size_mb = (d / WEIGHTS_NAME).stat().st_size / 2**20
        rows.append([part, f"{n_params / 1e6:.3f} M", f"{size_mb:.2f} MB", tr["steps"], tr["train"]["batch_size"],
                     tr["train"]["lr"], f"{tr['wall_seconds'] / 60:.1f} min", f"{tr['final_loss']:.4f}"])
        lines += [f"## {part}", "", prose.get(part, ""), "",
                  f"- data: {tr.get('data') or 'not recorded'}" + (f" (rows where {tr['where']})" if tr.get("where") else "")
                  + (f", split `{tr['split']}`" if tr.get("split") else ""),
                  f"- seed {tr['train']['seed']}; AdamW, lr {tr['train']['lr']} (warm-up {tr['train']['warmup']}), "
                  f"batch {tr['train']['batch_size']}, grad-clip {tr['train']['grad_clip']}"
                  + (f", EMA {tr['train']['ema_decay']}" if tr["train"].get("ema_decay") else ""),
                  "- commands:"]
        for seg in tr.get("segments") or [{"command": tr.get("command"), "start_step": 0, "end_step": tr["steps"]}]:
            threads = f", {seg['torch_threads']} torch threads" if "torch_threads" in seg else ""
            lines.append(f"  - `{seg['command']}` (steps {seg['start_step']}→{seg['end_step']}{threads})")
        lines += [f"- wall time {tr['wall_seconds'] / 60:.1f} min on {tr.get('device', 'cpu')} ({platform.machine()}, "
                  "2 cores shared with other jobs)", ""]
    return lines, rows


CARD_SUMMARY_HEADER = ["model", "parameters", "file", "steps", "batch", "lr", "wall", "final loss"]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (shipped with the package)."""
    from importlib import resources

    return json.loads((resources.files("diffscm") / "data" / "imagenet_classes.json").read_text())["names"]


def adm_defaults(flags: dict, guided: bool) -> dict:
    """Inference defaults of a converted guided-diffusion SCM: Diff-SCM's N = 100 DDIM steps and L = 0.75 (the
    published code's settings), the classifier scale of the flags, guidance on the intervened samples only,
    exact inversion (the null intervention returns the image), and a batch that fits in memory at the model size."""
    size = flags["image_size"]
    defaults = {"steps": 100, "ratio": 0.75, "inversion": "exact", "inversion_iters": 1, "clip": False,
                "guidance": "intervened", "batch_size": {64: 16, 128: 4}.get(size, 1)}
    if guided:
        defaults["scales"] = {"class": float(flags["classifier_scale"])}
    respacing = str(flags["timestep_respacing"])
    if respacing.startswith("ddim") and respacing[4:].isdigit():
        defaults["steps"] = int(respacing[4:])
    return defaults


def pack_adm(out: Path, diffusion, classifier, flags: dict, command: str, sources: dict[str, str],
             overwrite: bool = False) -> dict:
    """An SCM folder (class -> image, with the ImageNet class names) from a converted guided-diffusion model and
    its optional noisy classifier; ``diffusion/`` is a plain diffusers ``UNet2DModel`` folder. Returns scm.json."""
    if Path(out).exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    if classifier is None and not diffusion.num_classes:
        raise DiffSCMError("an unconditional diffusion model cannot act on the class without its classifier: "
                           "pass --classifier")
    if classifier is not None and classifier.config["image_size"] != flags["image_size"]:
        raise DiffSCMError(f"the classifier is for {classifier.config['image_size']} px images, the diffusion model "
                           f"for {flags['image_size']} px")
    graph = {"variables": [
        {"name": "class", "kind": "categorical", "num_classes": 1000, "parents": [],
         "categories": imagenet_class_names()},
        {"name": "image", "kind": "image", "parents": ["class"]}]}
    CausalGraph.from_dict(graph)
    cfg = {"graph": graph, "image": {"diffusion": "diffusion",
                                     "predictors": {"class": "predictor"} if classifier is not None else {}},
           "defaults": adm_defaults(flags, classifier is not None)}
    if diffusion.num_classes:
        cfg["image"]["condition"] = "class"
    card = ["# Converted guided-diffusion (ADM) SCM", "",
            f"Command: `{command}`", "",
            "| part | source | parameters |", "|---|---|---|",
            f"| diffusion | {sources.get('diffusion', '')} | {sum(p.numel() for p in diffusion.parameters()) / 1e6:.1f} M |"]
    if classifier is not None:
        card.append(f"| predictor (noisy classifier) | {sources.get('classifier', '')} | "
                    f"{sum(p.numel() for p in classifier.parameters()) / 1e6:.1f} M |")
    card += ["", "Flags: `" + " ".join(f"--{k} {flags[k]}" for k in sorted(flags) if not k.startswith("_")) + "`", "",
             "Defaults: `" + json.dumps(cfg["defaults"]) + "`", ""]

    def write(tmp: Path) -> None:
        diffusion.save_diffusers(tmp / "diffusion")
        if classifier is not None:
            classifier.save_pretrained(tmp / "predictor")
        (tmp / "scm.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp / "MODEL_CARD.md").write_text("\n".join(card))

    atomic_write_dir(out, write)
    return cfg
