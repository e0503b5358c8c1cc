"""``diffscm pack``: trained models into one SCM folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from ._common import named_paths
from .app import app


def _mechanism_defaults(items: list[str], guided: list[str], defaults: dict | None = None) -> dict[str, dict]:
    """``paper:steps=20`` items -> ``{"paper": {"steps": 20}}`` (``scale`` applies to every predictor, ``scales`` takes
    a JSON object of per-parent scales); each mechanism's options are checked on top of the model's ``defaults``."""
    from ..scm.mechanisms import InferenceOptions

    out: dict[str, dict] = {}
    for item in items:
        mech, sep, rest = item.partition(":")
        key, eq, value = rest.partition("=")
        if not sep or not eq or mech not in ("paper", "conditional"):
            raise DiffSCMError(f"bad --mechanism-default {item!r}: use paper:KEY=VALUE or conditional:KEY=VALUE")
        field_names = set(InferenceOptions.__dataclass_fields__) - {"mechanism", "cfg_weights"}
        if key not in field_names | {"scale"}:
            raise DiffSCMError(f"--mechanism-default {item!r}: unknown option {key!r}")
        try:
            v = value if key in ("inversion", "abduction", "guidance") else json.loads(value)
        except json.JSONDecodeError:
            raise DiffSCMError(f"--mechanism-default {item!r}: {value!r} is not a value") from None
        if key == "scale":
            out.setdefault(mech, {})["scales"] = {n: float(v) for n in guided}
        elif key == "scales":
            if not isinstance(v, dict) or not set(v) <= set(guided):
                raise DiffSCMError(f"--mechanism-default {item!r}: scales must be a JSON object over the predictors "
                                   f"({', '.join(guided)})")
            out.setdefault(mech, {})["scales"] = {n: float(x) for n, x in v.items()}
        else:
            out.setdefault(mech, {})[key] = v
    for mech, d in out.items():
        InferenceOptions(**{**(defaults or {}), **d, "mechanism": mech})   # one-line error for an out-of-range value
    return out


@app.command()
def pack(out: Path = typer.Option(..., help="SCM folder to write."),
         diffusion: Path = typer.Option(..., help="Diffusion checkpoint."),
         predictor: list[str] = typer.Option(..., "--predictor", help="Noise-aware predictor: DIR (the digit's) or NAME=DIR, one per image parent."),
         oracle: list[str] = typer.Option([], "--oracle", help="Evaluation oracle: DIR (digit) or NAME=DIR (classifier or regressor)."),
         flow: list[str] = typer.Option([], "--flow", help="Flow of a continuous attribute: NAME=DIR."),
         graph: Optional[Path] = typer.Option(None, help="Graph file (JSON/YAML); default: digit -> image."),
         scale: list[str] = typer.Option([], "--scale", help="Default guidance scale: S (every predictor) or NAME=S."),
         cfg_scale: float = typer.Option(0.0, help="Default classifier-free guidance weight w (conditional diffusion models)."),
         healthy_diffusion: Optional[Path] = typer.Option(None, help="Localization baseline: diffusion model trained on healthy images only."),
         vae: Optional[Path] = typer.Option(None, help="Evaluation: VAE whose posteriors define CLD."),
         cvae: Optional[Path] = typer.Option(None, help="Baseline: conditional VAE."),
         autoencoder: Optional[Path] = typer.Option(None, help="Baseline: autoencoder of the prototype method."),
         classifier: Optional[Path] = typer.Option(None, help="Baseline: classifier of the prototype method."),
         selector: Optional[Path] = typer.Option(None, help="Evaluation: classifier that judges settings on validation data (used by no method)."),
         judge: list[str] = typer.Option([], "--judge", help="Evaluation: a judge of the counterfactual benchmark, NAME=DIR (digit, thickness, intensity); repeatable."),
         steps: int = typer.Option(50), ratio: float = typer.Option(1.0),
         clip: bool = typer.Option(True, "--clip/--no-clip"), dynamic_norm: bool = typer.Option(False, "--dynamic-norm/--no-dynamic-norm"),
         inversion: str = typer.Option("ddim", help="Default abduction: ddim, fixed-point, exact or bdia."),
         inversion_iters: int = typer.Option(3, min=0, max=100, help="Default fixed-point iterations per step."),
         w: list[str] = typer.Option([], "--w", help="Default classifier-free weight of the conditional mechanism: W or NAME=W."),
         guidance: str = typer.Option("all", help="Default of where the weights and scales act: all, intervened or changed."),
         mechanism_default: list[str] = typer.Option([], "--mechanism-default", help="A default of one mechanism only, MECH:KEY=VALUE (e.g. paper:steps=20, paper:scale=4, paper:scales='{\"digit\": 8}'); repeatable."),
         overwrite: bool = typer.Option(False)):
    """Assemble trained checkpoints into an SCM folder (weights + configs only, no trainer state)."""
    from ..scm.graph import MNIST_GRAPH, CausalGraph
    from ..scm.packaging import pack_scm

    spec = CausalGraph.from_file(graph).to_dict() if graph is not None else MNIST_GRAPH
    predictors = named_paths(predictor, "--predictor", "digit")
    from ._counterfactual import scale_items

    scales = scale_items(scale, list(predictors), {})
    defaults = {"steps": steps, "ratio": ratio, "scales": scales, "clip": clip, "dynamic_norm": dynamic_norm,
                "inversion": inversion, "inversion_iters": inversion_iters, "guidance": guidance}
    if cfg_scale:
        defaults["cfg_scale"] = cfg_scale
    if w:
        from ..models.io import load_config

        names = [p["name"] for p in load_config(diffusion).get("parents") or []]
        if not names:
            raise DiffSCMError("--w needs a parent-conditioned diffusion model (trained with --conditional)")
        defaults["cfg_weights"] = scale_items(w, names, {}, "--w", "parent of the ε-model")
    per_mech = _mechanism_defaults(mechanism_default, list(predictors), defaults)
    pack_scm(out, spec, diffusion, predictors, defaults,
             oracles=named_paths(oracle, "--oracle", "digit"), flows=named_paths(flow, "--flow", None),
             overwrite=overwrite, mechanism_defaults=per_mech,
             evaluation={k: v for k, v in {"vae": vae, "cvae": cvae, "autoencoder": autoencoder,
                                           "classifier": classifier, "selector": selector,
                                           "healthy-diffusion": healthy_diffusion,
                                           **{f"judge-{k}": v for k, v in named_paths(judge, "--judge", None).items()}
                                           }.items() if v is not None})
    typer.echo(str(out))
