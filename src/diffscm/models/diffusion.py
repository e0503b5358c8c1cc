"""The image mechanism: an ε-prediction diffusion model (diffusers ``UNet2DModel``), optionally class-conditioned."""
from __future__ import annotations

import torch
from diffusers import UNet2DModel

from ..schedule import make_alphas_cumprod
from .base import Pretrained

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


class DiffusionModel(Pretrained):
    """ε_θ(x_t, t[, y]) with its noise schedule.

    Config keys: ``unet`` (UNet2DModel kwargs), ``schedule`` (linear|cosine), ``num_train_timesteps``,
    ``num_classes`` (0 = unconditional; else a label embedding of ``num_classes + 1`` rows, the last being ∅).
    """

    kind = "diffusion"

    def __init__(self, config: dict):
        config = {"unet": dict(DEFAULT_UNET), "schedule": "linear", "num_train_timesteps": 1000, "num_classes": 0, **config}
        super().__init__(config)
        unet_kwargs = dict(config["unet"])
        if config["num_classes"]:
            unet_kwargs["num_class_embeds"] = config["num_classes"] + 1
        self.unet = UNet2DModel(**unet_kwargs)
        if config["num_classes"]:
            # Zero label embeddings: a conditional model starts as its unconditional self (e.g. when fine-tuned
            # from an unconditional checkpoint with --init), and learns the labels' effects from there.
            torch.nn.init.zeros_(self.unet.class_embedding.weight)
        self.register_buffer("alphas_cumprod",
                             make_alphas_cumprod(config["schedule"], config["num_train_timesteps"]).float(),
                             persistent=False)

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        u = self.config["unet"]
        size = u["sample_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (u["in_channels"], *size)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict ε. ``t`` is an int tensor (N,) or scalar on the 0..T-1 scale; ``y`` labels (∅ = ``null_label``)."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if self.num_classes:
            if y is None:
                y = torch.full((x.shape[0],), self.null_label, device=x.device, dtype=torch.long)
            return self.unet(x, t, class_labels=y).sample
        return self.unet(x, t).sample
