"""Our UNet against diffusers' UNet2DModel: the same parameter names, and the same ε on random weights."""
from __future__ import annotations

import pytest
import torch

from diffscm.models.diffusion import DEFAULT_UNET
from diffscm.models.unet2d import UNet2D
from diffscm.train.fit import unet_config

torch.set_num_threads(1)

CONFIGS = {
    "default": dict(DEFAULT_UNET),
    "dropout, 2 layers": {**DEFAULT_UNET, "dropout": 0.1, "layers_per_block": 2},
    "class labels": {**DEFAULT_UNET, "num_class_embeds": 11},
    "parent embedding": {**DEFAULT_UNET, "class_embed_type": "identity"},
    "rgb 32": unet_config(32, 3),
    "64 px, 4 levels": unet_config(64, 1),
    "attention everywhere": {**DEFAULT_UNET, "down_block_types": ["AttnDownBlock2D"] * 3,
                             "up_block_types": ["AttnUpBlock2D"] * 3, "attention_head_dim": 16},
    # the guided-diffusion (ADM) options: scale-shift norm, ResNet up/down-sampling, a normed mid attention
    "adm options": {**DEFAULT_UNET, "down_block_types": ["ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
                    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"],
                    "resnet_time_scale_shift": "scale_shift", "downsample_type": "resnet", "upsample_type": "resnet",
                    "attn_norm_num_groups": 8, "attention_head_dim": 16, "num_class_embeds": 11, "out_channels": 2},
    "scale-shift, mid attention without a norm": {**DEFAULT_UNET, "resnet_time_scale_shift": "scale_shift"},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_diffusers_on_random_weights(name):
    from diffusers import UNet2DModel

    cfg = CONFIGS[name]
    torch.manual_seed(0)
    ref = UNet2DModel(**cfg).eval()
    with torch.no_grad():                        # move every parameter off its init, so no swap goes unseen
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = UNet2D(**cfg).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    assert set(ours.state_dict()) == set(ref.state_dict())
    c, s = cfg["in_channels"], cfg["sample_size"]
    x, t = torch.randn(3, c, s, s), torch.tensor([0, 417, 999])
    labels = None
    if cfg.get("num_class_embeds"):
        labels = torch.tensor([0, 5, 10])
    if cfg.get("class_embed_type") == "identity":
        labels = torch.randn(3, 4 * cfg["block_out_channels"][0])
    with torch.no_grad():
        a = ref(x, t, class_labels=labels).sample
        b = ours(x, t, class_labels=labels).sample
        c_scalar = ours(x, torch.tensor(417), class_labels=labels).sample
        d_scalar = ref(x, torch.tensor(417), class_labels=labels).sample
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()
    assert torch.allclose(c_scalar, d_scalar, atol=1e-5, rtol=1e-4)


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError, match="not supported"):
        UNet2D(**{**DEFAULT_UNET, "resnet_time_scale_shift": "ada_group"})
    with pytest.raises(ValueError, match="not supported"):
        UNet2D(**{**DEFAULT_UNET, "down_block_types": ["CrossAttnDownBlock2D"] * 3})
