"""A UNet with the architecture, parameter names and outputs of diffusers' ``UNet2DModel`` for the options our
ε-models use, so a checkpoint moves between the two unchanged (``tests/test_unet2d.py`` checks the equivalence).

Why not import diffusers here: importing it pulls in ``torch._dynamo`` and ``scipy.stats`` (about 2 s of every
command's start). Supported options: ``sample_size``, ``in_channels``, ``out_channels``, ``block_out_channels``,
``down_block_types`` (``DownBlock2D``/``AttnDownBlock2D``), ``up_block_types`` (``UpBlock2D``/``AttnUpBlock2D``),
``layers_per_block``, ``norm_num_groups``, ``attention_head_dim``, ``dropout``, ``num_class_embeds``,
``class_embed_type`` (``None`` or ``identity``), ``resnet_time_scale_shift`` (``default`` or ``scale_shift``),
``downsample_type`` / ``upsample_type`` (``conv`` or ``resnet``: a ResNet block that resamples, as in ADM's
``resblock_updown``) and ``attn_norm_num_groups``; every other diffusers option at its default (positional time
embedding with cos-first, mid block with attention, ε = 1e-5). These cover the guided-diffusion (ADM) UNets.

One option is ours, not diffusers': ``attention_heads``, the number of heads of each level (down block i, up block
L−1−i; the mid block takes the last), for models whose head count, not head width, is fixed (ADM's ``num_heads``).
diffusers ignores it, so a folder that needs it does not compute the same ε under diffusers.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = {"sample_size", "in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
             "layers_per_block", "norm_num_groups", "attention_head_dim", "dropout", "num_class_embeds",
             "class_embed_type", "resnet_time_scale_shift", "downsample_type", "upsample_type",
             "attn_norm_num_groups", "attention_heads"}
CHOICES = {"resnet_time_scale_shift": ("default", "scale_shift"), "downsample_type": ("conv", "resnet"),
           "upsample_type": ("conv", "resnet")}
EPS = 1e-5


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers' ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``: [cos, sin] of t·10000^(−k/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    def __init__(self, dim_in: int, dim: int):
        super().__init__()
        self.linear_1, self.act, self.linear_2 = nn.Linear(dim_in, dim), nn.SiLU(), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """diffusers' ``ResnetBlock2D``: ``scale_shift`` applies the time embedding as norm2(h)·(1 + scale) + shift;
    ``resample`` ``up`` / ``down`` resizes both paths after the first norm (nearest ×2 / 2×2 average)."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int, dropout: float, scale_shift: bool = False,
                 resample: str | None = None):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, 2 * cout if scale_shift else cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.scale_shift, self.resample = scale_shift, resample

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return nearest2x(x)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        h, x = self.conv1(self._resample(h)), self._resample(x)
        e = self.time_emb_proj(F.silu(temb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


def nearest2x(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.bfloat16:   # nearest upsampling has no bfloat16 kernel everywhere
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest").to(x.dtype)
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Attention(nn.Module):
    """Self-attention over the pixels with a group norm and a residual connection (diffusers' ``Attention`` as the
    UNet's blocks configure it)."""

    def __init__(self, channels: int, heads: int, groups: int | None):
        super().__init__()
        self.heads = heads
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS) if groups else nn.Identity()
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.group_norm(x).view(b, c, hgt * wid).transpose(1, 2)
        q, k, v = (f(h).view(b, -1, self.heads, c // self.heads).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c).to(q.dtype)
        h = self.to_out[1](self.to_out[0](h))
        return h.transpose(-1, -2).reshape(b, c, hgt, wid) + x


class Downsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nearest2x(x))


def _heads(channels: int, head_dim: int | None, heads: int | None) -> int:
    if heads is not None:
        if channels % heads:
            raise ValueError(f"{heads} attention heads do not divide the block width {channels}")
        return heads
    head_dim = head_dim or channels
    if channels % head_dim:
        raise ValueError(f"attention_head_dim {head_dim} must divide the block width {channels}")
    return channels // head_dim


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, layers: int, groups: int, dropout: float, attn: bool,
                 heads: int, down: str | None, scale_shift: bool = False):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups, dropout, scale_shift)
                                      for i in range(layers)])
        if attn:
            self.attentions = nn.ModuleList([Attention(cout, heads, groups) for _ in range(layers)])
        if down == "resnet":
            self.downsamplers = nn.ModuleList([ResnetBlock2D(cout, cout, temb, groups, dropout, scale_shift, "down")])
        else:
            self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if down else None

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        states = ()
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if hasattr(self, "attentions"):
                h = self.attentions[i](h)
            states += (h,)
        if self.downsamplers is not None:
            d = self.downsamplers[0]
            h = d(h, temb) if isinstance(d, ResnetBlock2D) else d(h)
            states += (h,)
        return h, states


class UpBlock(nn.Module):
    def __init__(self, cin: int, prev: int, cout: int, temb: int, layers: int, groups: int, dropout: float, attn: bool,
                 heads: int, up: str | None, scale_shift: bool = False):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D((prev if i == 0 else cout) + (cin if i == layers - 1 else cout), cout, temb, groups, dropout,
                          scale_shift)
            for i in range(layers)])
        if attn:
            self.attentions = nn.ModuleList([Attention(cout, heads, groups) for _ in range(layers)])
        if up == "resnet":
            self.upsamplers = nn.ModuleList([ResnetBlock2D(cout, cout, temb, groups, dropout, scale_shift, "up")])
        else:
            self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if up else None

    def forward(self, h: torch.Tensor, skips: tuple, temb: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            h = resnet(torch.cat([h, skips[-1 - i]], dim=1), temb)
            if hasattr(self, "attentions"):
                h = self.attentions[i](h)
        if self.upsamplers is not None:
            u = self.upsamplers[0]
            h = u(h, temb) if isinstance(u, ResnetBlock2D) else u(h)
        return h


class MidBlock(nn.Module):
    def __init__(self, channels: int, temb: int, groups: int, dropout: float, heads: int,
                 attn_groups: int | None = None, scale_shift: bool = False):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, groups, dropout, scale_shift)
                                      for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(channels, heads, attn_groups)])

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](h, temb)), temb)


class UNet2D(nn.Module):
    """ε(x, t[, class embedding]) with ``UNet2DModel``'s parameter names; ``forward`` returns an object whose
    ``sample`` is the output, as diffusers' does."""

    def __init__(self, **config):
        super().__init__()
        unknown = set(config) - SUPPORTED
        if unknown:
            raise ValueError(f"UNet option(s) not supported: {', '.join(sorted(unknown))}")
        ch = list(config["block_out_channels"])
        downs, ups = list(config["down_block_types"]), list(config["up_block_types"])
        if not len(ch) == len(downs) == len(ups):
            raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length")
        bad = [t for t in downs if t not in ("DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D")] + \
              [t for t in ups if t not in ("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D")]
        if bad:
            raise ValueError(f"UNet block type {bad[0]!r} not supported")
        for key, allowed in CHOICES.items():
            if config.get(key, allowed[0]) not in allowed:
                raise ValueError(f"UNet option {key}={config[key]!r} not supported (use {' or '.join(allowed)})")
        heads = config.get("attention_heads")
        if heads is not None and len(heads) != len(ch):
            raise ValueError("attention_heads needs one head count per level")
        heads = list(heads) if heads is not None else [None] * len(ch)
        self.config = SimpleNamespace(**config)
        layers = int(config.get("layers_per_block", 2))
        groups = int(config.get("norm_num_groups", 32))
        head = config.get("attention_head_dim", 8)
        dropout = float(config.get("dropout", 0.0))
        ss = config.get("resnet_time_scale_shift", "default") == "scale_shift"
        down_type, up_type = config.get("downsample_type", "conv"), config.get("upsample_type", "conv")
        attn_groups = config.get("attn_norm_num_groups")
        if attn_groups is None:        # diffusers: the mid block's attention is normed only with the default shift
            attn_groups = None if ss else groups
        temb = 4 * ch[0]
        self.conv_in = nn.Conv2d(config["in_channels"], ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        if config.get("class_embed_type") == "identity":
            self.class_embedding = nn.Identity()
        elif config.get("class_embed_type") is None and config.get("num_class_embeds"):
            self.class_embedding = nn.Embedding(config["num_class_embeds"], temb)
        elif config.get("class_embed_type") is None:
            self.class_embedding = None
        else:
            raise ValueError(f"class_embed_type {config['class_embed_type']!r} not supported")
        self.down_blocks = nn.ModuleList()
        prev = ch[0]
        for i, t in enumerate(downs):
            attn = t.startswith("Attn")
            # as diffusers: a ResNet block resamples in Resnet*Block2D, and in Attn*Block2D with type "resnet"
            kind = "resnet" if t.startswith("Resnet") or (attn and down_type == "resnet") else "conv"
            self.down_blocks.append(DownBlock(prev, ch[i], temb, layers, groups, dropout, attn,
                                              _heads(ch[i], head, heads[i]) if attn else 1,
                                              kind if i < len(ch) - 1 else None, ss))
            prev = ch[i]
        self.mid_block = MidBlock(ch[-1], temb, groups, dropout, _heads(ch[-1], head, heads[-1]), attn_groups, ss)
        rev = ch[::-1]
        self.up_blocks = nn.ModuleList()
        for i, t in enumerate(ups):
            attn = t.startswith("Attn")
            kind = "resnet" if t.startswith("Resnet") or (attn and up_type == "resnet") else "conv"
            self.up_blocks.append(UpBlock(rev[min(i + 1, len(ch) - 1)], rev[max(i - 1, 0)], rev[i], temb, layers + 1,
                                          groups, dropout, attn, _heads(rev[i], head, heads[-1 - i]) if attn else 1,
                                          kind if i < len(ch) - 1 else None, ss))
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=EPS)
        self.conv_out = nn.Conv2d(ch[0], config["out_channels"], 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor | None = None):
        t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=sample.device)
        t = t.reshape(-1).to(sample.device) * torch.ones(sample.shape[0], dtype=t.dtype, device=sample.device)
        emb = self.time_embedding(timestep_embedding(t, self.conv_in.out_channels).to(self.conv_in.weight.dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels should be provided when doing class conditioning")
            emb = emb + self.class_embedding(class_labels).to(self.conv_in.weight.dtype)   # as diffusers: model dtype
        elif class_labels is not None:
            raise ValueError("class_labels given to a UNet without a class embedding")
        h = self.conv_in(sample)
        skips: tuple = (h,)
        for block in self.down_blocks:
            h, states = block(h, emb)
            skips += states
        h = self.mid_block(h, emb)
        for block in self.up_blocks:
            n = len(block.resnets)
            h, skips = block(h, skips[-n:], emb), skips[:-n]
        return SimpleNamespace(sample=self.conv_out(F.silu(self.conv_norm_out(h))))
