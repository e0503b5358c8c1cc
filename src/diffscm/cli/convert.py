"""``diffscm convert adm``: OpenAI guided-diffusion checkpoints into an SCM folder."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from .app import app

convert_app = typer.Typer(no_args_is_help=True, help="Convert other projects' checkpoints into SCM folders.")
app.add_typer(convert_app, name="convert")


@convert_app.command("adm")
def convert_adm(
        diffusion: Path = typer.Option(..., help="guided-diffusion model .pt (e.g. 256x256_diffusion.pt)."),
        classifier: Optional[Path] = typer.Option(None, help="Its noisy classifier .pt (e.g. 256x256_classifier.pt); "
                                                              "needed by an unconditional model."),
        model_flags: list[str] = typer.Option([], "--model-flags", help="guided-diffusion's MODEL_FLAGS (and "
                                              "CLASSIFIER_FLAGS, SAMPLE_FLAGS) strings, verbatim; repeatable, later wins."),
        preset: Optional[str] = typer.Option(None, help="Flags of a published checkpoint: imagenet-64-cond, "
                                             "imagenet-128-cond, imagenet-256-cond or imagenet-256-uncond."),
        out: Path = typer.Option(..., help="SCM folder to write; OUT/diffusion is a diffusers UNet2DModel folder."),
        overwrite: bool = typer.Option(False, help="Replace an existing --out.")):
    """A class -> image SCM from guided-diffusion's (ADM) ImageNet diffusion model and noisy classifier, loaded with
    torch.load(weights_only=True): no pickled code runs."""
    from ..models import adm
    from ..scm.packaging import pack_adm

    if preset is None and not model_flags:
        raise DiffSCMError("give the checkpoint's flags: --preset NAME or --model-flags \"...\"")
    if preset is not None and preset not in adm.PRESETS:
        raise DiffSCMError(f"unknown preset {preset!r} (use {', '.join(adm.PRESETS)})")
    if out.exists() and not overwrite:
        raise DiffSCMError(f"{out} already exists; pass --overwrite")
    flags = adm.parse_flags(*([adm.PRESETS[preset]] if preset else []), *model_flags)
    model = adm.convert_unet(adm.load_state_dict_file(diffusion), flags, f"diffusion checkpoint {diffusion}")
    clf = None
    if classifier is not None:
        clf = adm.convert_classifier(adm.load_state_dict_file(classifier), flags, f"classifier checkpoint {classifier}")
    command = "diffscm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    cfg = pack_adm(out, model, clf, flags, command,
                   {"diffusion": diffusion.name, **({"classifier": classifier.name} if classifier else {})}, overwrite)
    typer.echo(json.dumps({"out": str(out), "defaults": cfg["defaults"]}))
