"""The image mechanism: an ε-prediction diffusion model (a UNet with diffusers' ``UNet2DModel`` architecture and
parameter names, :mod:`diffscm.models.unet2d`), optionally conditioned on a
class label or on every parent of the image (:class:`ParentEmbedding`)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import DiffSCMError
from ..schedule import make_alphas_cumprod
from .base import Pretrained
from .unet2d import UNet2D

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"

DEFAULT_UNET = {
    "sample_size": 28,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": 32,
}


class ParentEmbedding(nn.Module):
    """Embedding of the image's parents, added to the UNet's time embedding.

    ``parents`` lists one spec per parent: ``{"name", "kind": "categorical", "num_classes"}`` (a learned row per class
    plus a null row) or ``{"name", "kind": "continuous", "low", "high"}`` (the value normalised to its support, Fourier
    features, an MLP; a learned null vector). Values arrive as an (N, P) float tensor in spec order; NaN is the null
    token ∅ of that parent, so each parent can be dropped on its own. The output layer starts at zero, so a model
    fine-tuned from an unconditional checkpoint starts as it.
    """

    def __init__(self, parents: list[dict], dim: int, fourier: int = 6):
        super().__init__()
        self.specs = [dict(p) for p in parents]
        self.embeds = nn.ModuleList()
        self.nulls = nn.ParameterDict()   # learned ∅ of each continuous parent, by column
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(fourier, dtype=torch.float32), persistent=False)
        for spec in self.specs:
            if spec["kind"] == "categorical":
                self.embeds.append(nn.Embedding(int(spec["num_classes"]) + 1, dim))
            elif spec["kind"] == "continuous":
                if spec.get("low") is None or spec.get("high") is None or not spec["high"] > spec["low"]:
                    raise ValueError(f"continuous parent {spec['name']!r} needs a finite support low < high")
                self.embeds.append(nn.Sequential(nn.Linear(2 * fourier + 1, dim), nn.SiLU(), nn.Linear(dim, dim)))
                self.nulls[str(len(self.embeds) - 1)] = nn.Parameter(torch.randn(dim) * 0.02)
            else:
                raise ValueError(f"parent {spec.get('name')!r}: kind must be categorical or continuous")
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        h = 0.0
        for j, (spec, embed) in enumerate(zip(self.specs, self.embeds)):
            v = values[:, j]
            null = torch.isnan(v)
            if spec["kind"] == "categorical":
                k = int(spec["num_classes"])
                h = h + embed(torch.where(null, k, v.nan_to_num(0).long().clamp(0, k - 1)))
            else:
                z = ((v.float() - spec["low"]) / (spec["high"] - spec["low"])).nan_to_num(0)[:, None]
                e = embed(torch.cat([z, torch.sin(z * self.freqs), torch.cos(z * self.freqs)], 1))
                h = h + torch.where(null[:, None], self.nulls[str(j)].to(e.dtype), e)
        return self.out(h)


class DiffusionModel(Pretrained):
    """ε_θ(x_t, t[, y]) with its noise schedule.

    Config keys: ``unet`` (``UNet2DModel`` kwargs, see :mod:`diffscm.models.unet2d`), ``schedule`` (linear|cosine), ``num_train_timesteps``, and one of
    ``num_classes`` (a label embedding of ``num_classes + 1`` rows, the last being ∅) or ``parents`` (a
    :class:`ParentEmbedding` of every image parent, ∅ per parent); neither = unconditional. ``learn_sigma``: the UNet
    also outputs a variance (twice the image channels, as guided-diffusion's models); ε is the first half.
    ``label_parent`` (with ``num_classes``): the label is that categorical parent, so the model is parent-conditioned
    on it (``y`` an (N, 1) float column, NaN = ∅), as a converted class-conditional ADM model is.
    """

    kind = "diffusion"

    def __init__(self, config: dict):
        config = {"unet": dict(DEFAULT_UNET), "schedule": "linear", "num_train_timesteps": 1000, "num_classes": 0,
                  "parents": [], "learn_sigma": False, **config}
        if config["num_classes"] and config["parents"]:
            raise ValueError("a diffusion model is conditioned on num_classes or on parents, not both")
        if config.get("label_parent") and not config["num_classes"]:
            raise ValueError("label_parent needs num_classes")
        super().__init__(config)
        unet_kwargs = dict(config["unet"])
        if config["num_classes"]:
            unet_kwargs["num_class_embeds"] = config["num_classes"] + 1
        if config["parents"]:
            unet_kwargs["class_embed_type"] = "identity"
        self.unet = UNet2D(**unet_kwargs)
        if config["parents"]:
            self.parent_embedding = ParentEmbedding(config["parents"], 4 * unet_kwargs["block_out_channels"][0])
        if config["num_classes"]:
            # Zero label embeddings: a conditional model starts as its unconditional self (e.g. when fine-tuned
            # from an unconditional checkpoint with --init), and learns the labels' effects from there.
            torch.nn.init.zeros_(self.unet.class_embedding.weight)
        self.register_buffer("alphas_cumprod",
                             make_alphas_cumprod(config["schedule"], config["num_train_timesteps"]).float(),
                             persistent=False)

    def save_diffusers(self, path: str | Path) -> None:
        """Write a folder that ``diffusers.UNet2DModel.from_pretrained`` loads as it is (config.json with the UNet's
        options, diffusion_pytorch_model.safetensors); the rest of this model's config rides along under ``diffscm``
        (diffusers ignores it), so :meth:`from_pretrained` reads the folder back whole."""
        from ..files import atomic_write_dir
        from safetensors.torch import save_file

        rest = {k: v for k, v in self.config.items() if k != "unet"}
        config = {"_class_name": "UNet2DModel", **self.config["unet"], "diffscm": {"kind": self.kind, **rest}}
        if self.num_classes:
            config["num_class_embeds"] = self.num_classes + 1

        def write(tmp: Path) -> None:
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            save_file({k[len("unet."):]: v.detach().contiguous().cpu() for k, v in self.state_dict().items()
                       if k.startswith("unet.")}, str(tmp / DIFFUSERS_WEIGHTS))

        if any(not k.startswith("unet.") for k in self.state_dict()):
            raise DiffSCMError("a parent-embedding model has weights outside the UNet: save it with save_pretrained")
        atomic_write_dir(path, write)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu"):
        """Our checkpoint folder, or a diffusers ``UNet2DModel`` folder written by :meth:`save_diffusers`."""
        cfg_file = Path(path) / "config.json"
        try:
            raw = json.loads(cfg_file.read_bytes()) if cfg_file.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raw = None               # the generic loader names the problem
        if not (isinstance(raw, dict) and raw.get("_class_name") == "UNet2DModel"):
            return super().from_pretrained(path, device)
        from ..models.io import load_state_into
        from safetensors.torch import load_file

        rest = dict(raw.get("diffscm") or {"kind": cls.kind})
        rest.pop("kind", None)
        unet = {k: v for k, v in raw.items() if not k.startswith("_") and k not in ("diffscm", "num_class_embeds")}
        try:
            model = cls({**rest, "unet": unet})
        except (TypeError, ValueError, KeyError) as exc:
            raise DiffSCMError(f"{path}: config does not describe a diffusion model ({exc})") from None
        w = Path(path) / DIFFUSERS_WEIGHTS
        if not w.is_file():
            raise DiffSCMError(f"{path} has no {DIFFUSERS_WEIGHTS}")
        load_state_into(model, {f"unet.{k}": v for k, v in load_file(str(w)).items()}, path)
        model.meta = {}
        return model.to(device).eval()

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def parent_names(self) -> list[str]:
        """The parents this model is conditioned on, in the column order of its ``y`` (empty if it is not)."""
        if self.config.get("label_parent"):
            return [self.config["label_parent"]]
        return [p["name"] for p in self.config["parents"]]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        u = self.config["unet"]
        size = u["sample_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (u["in_channels"], *size)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict ε. ``t`` is an int tensor (N,) or scalar on the 0..T-1 scale; ``y`` labels (∅ = ``null_label``),
        or for a parent-conditioned model an (N, P) float tensor of parent values (NaN = ∅; ``None`` = all ∅)."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        out = self._unet(x, t, y)
        return out[:, :x.shape[1]] if self.config["learn_sigma"] else out

    def _unet(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.config.get("label_parent"):
            v = y[:, 0] if y is not None else torch.full((x.shape[0],), float("nan"), device=x.device)
            label = torch.where(torch.isnan(v), self.null_label, v.nan_to_num(0).long().clamp(0, self.num_classes - 1))
            return self.unet(x, t, class_labels=label).sample
        if self.parent_names:
            if y is None:
                y = torch.full((x.shape[0], len(self.parent_names)), float("nan"), device=x.device)
            return self.unet(x, t, class_labels=self.parent_embedding(y)).sample
        if self.num_classes:
            if y is None:
                y = torch.full((x.shape[0],), self.null_label, device=x.device, dtype=torch.long)
            return self.unet(x, t, class_labels=y).sample
        return self.unet(x, t).sample
