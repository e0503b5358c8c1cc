"""OpenAI's guided-diffusion (ADM, Dhariwal & Nichol 2021) checkpoints: their flags, the diffusion UNet mapped onto
diffusers' ``UNet2DModel`` layout (:mod:`diffscm.models.unet2d`), and the noisy classifier as :class:`ADMClassifier`.

The UNet maps block for block: ``use_scale_shift_norm`` is ``resnet_time_scale_shift="scale_shift"``,
``resblock_updown`` ResNet blocks that resample, learned σ six output channels (ε is the first three). Attention
weights are one ``qkv`` 1-D convolution in ADM; its rows are split into ``to_q``/``to_k``/``to_v`` in the layout
the checkpoint uses: the legacy order interleaves q, k, v per head (rows ordered head, q|k|v, channel), the new
order (``use_new_attention_order``) stacks them (q|k|v, head, channel).
"""
from __future__ import annotations

import shlex
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffSCMError
from .base import Pretrained
from .unet2d import EPS, DownBlock, MidBlock, TimestepEmbedding, timestep_embedding

# guided-diffusion's defaults (script_util.model_and_diffusion_defaults, classifier_defaults, diffusion_defaults)
DEFAULTS = {
    "image_size": 64, "num_channels": 128, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
    "num_head_channels": -1, "attention_resolutions": "16,8", "channel_mult": "", "dropout": 0.0, "class_cond": False,
    "use_checkpoint": False, "use_scale_shift_norm": True, "resblock_updown": False, "use_fp16": False,
    "use_new_attention_order": False, "learn_sigma": False, "diffusion_steps": 1000, "noise_schedule": "linear",
    "timestep_respacing": "", "use_kl": False, "predict_xstart": False, "rescale_timesteps": False,
    "rescale_learned_sigmas": False,
    "classifier_use_fp16": False, "classifier_width": 128, "classifier_depth": 2,
    "classifier_attention_resolutions": "32,16,8", "classifier_use_scale_shift_norm": True,
    "classifier_resblock_updown": True, "classifier_pool": "attention",
    # SAMPLE_FLAGS, accepted so a user can paste them too; classifier_scale and timestep_respacing set our defaults
    "classifier_scale": 1.0, "batch_size": 16, "num_samples": 10000, "use_ddim": False, "clip_denoised": True,
    "model_path": "", "classifier_path": "",
}

_MODEL_256 = ("--attention_resolutions 32,16,8 --class_cond {cond} --diffusion_steps 1000 --image_size 256 "
              "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 "
              "--resblock_updown True --use_fp16 True --use_scale_shift_norm True")
_CLASSIFIER = ("--image_size {size} --classifier_attention_resolutions 32,16,8 --classifier_depth {depth} "
               "--classifier_width 128 --classifier_pool attention --classifier_resblock_updown True "
               "--classifier_use_scale_shift_norm True")
# The MODEL_FLAGS and CLASSIFIER_FLAGS of guided-diffusion's README, per published checkpoint, with the classifier
# scale its README samples with.
PRESETS = {
    "imagenet-64-cond": ("--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 "
                         "--image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 "
                         "--num_head_channels 64 --num_res_blocks 3 --resblock_updown True "
                         "--use_new_attention_order True --use_fp16 True --use_scale_shift_norm True "
                         + _CLASSIFIER.format(size=64, depth=4) + " --classifier_scale 1.0"),
    "imagenet-128-cond": ("--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 "
                          "--learn_sigma True --noise_schedule linear --num_channels 256 --num_heads 4 "
                          "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True "
                          + _CLASSIFIER.format(size=128, depth=2) + " --classifier_scale 0.5"),
    "imagenet-256-cond": (_MODEL_256.format(cond="True") + " " + _CLASSIFIER.format(size=256, depth=2)
                          + " --classifier_scale 1.0"),
    "imagenet-256-uncond": (_MODEL_256.format(cond="False") + " " + _CLASSIFIER.format(size=256, depth=2)
                            + " --classifier_scale 10.0"),
}
CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
NUM_CLASSES = 1000


def _bool(key: str, v: str) -> bool:
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise DiffSCMError(f"flag --{key}: {v!r} is not a boolean (True or False)")


def parse_flags(*strings: str) -> dict:
    """guided-diffusion's MODEL_FLAGS / CLASSIFIER_FLAGS / SAMPLE_FLAGS strings (``--key value`` pairs, as its README
    writes them) over its defaults. Unknown flags and values of the wrong type are one-line errors."""
    flags = dict(DEFAULTS)
    for s in strings:
        tokens = shlex.split(s or "")
        if len(tokens) % 2:
            raise DiffSCMError(f"flags {s!r}: every --flag needs a value")
        for key, value in zip(tokens[::2], tokens[1::2]):
            name = key.lstrip("-")
            if not key.startswith("--") or name not in DEFAULTS:
                raise DiffSCMError(f"unknown guided-diffusion flag {key!r}")
            default = DEFAULTS[name]
            try:
                flags[name] = (_bool(name, value) if isinstance(default, bool) else
                               type(default)(value) if isinstance(default, (int, float)) else value)
            except DiffSCMError:
                raise
            except ValueError:
                kind = {int: "an integer", float: "a number"}[type(default)]
                raise DiffSCMError(f"flag --{name}: {value!r} is not {kind}") from None
    size = flags["image_size"]
    if not flags["channel_mult"] and size not in CHANNEL_MULT:
        raise DiffSCMError(f"image_size {size}: guided-diffusion presets exist for {', '.join(map(str, CHANNEL_MULT))}"
                           " (the 512 model's half-width first level has no UNet2DModel equivalent)")
    if flags["predict_xstart"]:
        raise DiffSCMError("predict_xstart models are not supported: diffscm's samplers need an ε-model")
    return flags


def channel_mult(flags: dict) -> tuple[int, ...]:
    if flags["channel_mult"]:
        mult = tuple(float(m) for m in flags["channel_mult"].split(","))
        if any(m != int(m) for m in mult) or mult[0] != 1:
            raise DiffSCMError(f"channel_mult {flags['channel_mult']}: the first level must have multiplier 1 and all "
                               "must be integers, as UNet2DModel's layout needs")
        return tuple(int(m) for m in mult)
    return CHANNEL_MULT[flags["image_size"]]


def _attention_ds(flags: dict, key: str) -> set[int]:
    try:
        return {flags["image_size"] // int(r) for r in str(flags[key]).split(",") if r}
    except ValueError:
        raise DiffSCMError(f"flag --{key} {flags[key]!r}: use comma-separated resolutions such as 32,16,8") from None


def _heads(flags: dict, channels: int, up: bool = False) -> int:
    if flags["num_head_channels"] != -1:
        if channels % flags["num_head_channels"]:
            raise DiffSCMError(f"num_head_channels {flags['num_head_channels']} does not divide {channels} channels")
        return channels // flags["num_head_channels"]
    heads = flags["num_heads_upsample"] if up and flags["num_heads_upsample"] != -1 else flags["num_heads"]
    return heads


def unet_config(flags: dict) -> dict:
    """The ``UNet2DModel`` config of an ADM diffusion model (plus our ``attention_heads`` where ADM fixes the head
    count rather than the head width)."""
    mult, ch = channel_mult(flags), flags["num_channels"]
    if flags["num_heads_upsample"] not in (-1, flags["num_heads"]) and flags["num_head_channels"] == -1:
        raise DiffSCMError("num_heads_upsample different from num_heads is not supported")
    attn = _attention_ds(flags, "attention_resolutions")
    has = [2 ** i in attn for i in range(len(mult))]
    updown = flags["resblock_updown"]
    widths = [ch * m for m in mult]
    cfg = {
        "sample_size": flags["image_size"], "in_channels": 3, "out_channels": 6 if flags["learn_sigma"] else 3,
        "block_out_channels": widths, "layers_per_block": flags["num_res_blocks"],
        "down_block_types": ["AttnDownBlock2D" if a else ("ResnetDownsampleBlock2D" if updown else "DownBlock2D")
                             for a in has],
        "up_block_types": ["AttnUpBlock2D" if a else ("ResnetUpsampleBlock2D" if updown else "UpBlock2D")
                           for a in has[::-1]],
        "resnet_time_scale_shift": "scale_shift" if flags["use_scale_shift_norm"] else "default",
        "downsample_type": "resnet" if updown else "conv", "upsample_type": "resnet" if updown else "conv",
        "norm_num_groups": 32, "attn_norm_num_groups": 32, "dropout": 0.0,
    }
    if flags["num_head_channels"] != -1:
        cfg["attention_head_dim"] = flags["num_head_channels"]
    else:
        heads = [flags["num_heads"]] * len(mult)
        head_dims = {w // flags["num_heads"] for w, a in zip(widths, has) if a} | {widths[-1] // flags["num_heads"]}
        if len(head_dims) == 1:                     # one head width everywhere: diffusers' own option says it
            cfg["attention_head_dim"] = head_dims.pop()
        else:
            cfg["attention_head_dim"], cfg["attention_heads"] = None, heads
    return cfg


def diffusion_config(flags: dict) -> dict:
    """The :class:`~diffscm.models.DiffusionModel` config of an ADM checkpoint."""
    if flags["diffusion_steps"] != 1000:
        raise DiffSCMError(f"diffusion_steps {flags['diffusion_steps']}: only the published T = 1000 is supported")
    if flags["noise_schedule"] not in ("linear", "cosine"):
        raise DiffSCMError(f"noise_schedule {flags['noise_schedule']!r}: use linear or cosine")
    return {"unet": unet_config(flags), "schedule": flags["noise_schedule"], "num_train_timesteps": 1000,
            "num_classes": NUM_CLASSES if flags["class_cond"] else 0, "learn_sigma": flags["learn_sigma"],
            **({"label_parent": "class"} if flags["class_cond"] else {}), "source": "guided-diffusion"}


# ---- the checkpoints' keys ---------------------------------------------------------------------------------------

RES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
       "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def _down_layout(flags: dict, mult, attn: set[int], depth: int, width: int, prefix: str = "input_blocks"):
    """(ADM prefix, our prefix, kind, heads) of the input blocks and the middle block (shared by UNet and encoder)."""
    pairs = [(f"{prefix}.0.0", "conv_in", "plain", 0)]
    k, ds, levels = 1, 1, len(mult)
    for level, m in enumerate(mult):
        for i in range(depth):
            pairs.append((f"{prefix}.{k}.0", f"down_blocks.{level}.resnets.{i}", "res", 0))
            if ds in attn:
                pairs.append((f"{prefix}.{k}.1", f"down_blocks.{level}.attentions.{i}", "attn",
                              _heads(flags, width * m)))
            k += 1
        if level != levels - 1:
            if flags["_updown"]:
                pairs.append((f"{prefix}.{k}.0", f"down_blocks.{level}.downsamplers.0", "res", 0))
            else:
                pairs.append((f"{prefix}.{k}.0.op", f"down_blocks.{level}.downsamplers.0.conv", "plain", 0))
            k, ds = k + 1, ds * 2
    pairs += [("middle_block.0", "mid_block.resnets.0", "res", 0),
              ("middle_block.1", "mid_block.attentions.0", "attn", _heads(flags, width * mult[-1])),
              ("middle_block.2", "mid_block.resnets.1", "res", 0),
              ("time_embed.0", "time_embedding.linear_1", "plain", 0),
              ("time_embed.2", "time_embedding.linear_2", "plain", 0)]
    return pairs, ds


def unet_layout(flags: dict) -> list[tuple[str, str, str, int]]:
    """Every module of an ADM UNet: (its prefix in the checkpoint, its prefix in UNet2DModel, kind, attention heads)."""
    mult, attn = channel_mult(flags), _attention_ds(flags, "attention_resolutions")
    f = {**flags, "_updown": flags["resblock_updown"]}
    pairs, ds = _down_layout(f, mult, attn, flags["num_res_blocks"], flags["num_channels"])
    levels, k = len(mult), 0
    for level in reversed(range(levels)):
        for i in range(flags["num_res_blocks"] + 1):
            up = levels - 1 - level
            pairs.append((f"output_blocks.{k}.0", f"up_blocks.{up}.resnets.{i}", "res", 0))
            j = 1
            if ds in attn:
                pairs.append((f"output_blocks.{k}.1", f"up_blocks.{up}.attentions.{i}", "attn",
                              _heads(flags, flags["num_channels"] * mult[level], up=True)))
                j = 2
            if level and i == flags["num_res_blocks"]:
                if flags["resblock_updown"]:
                    pairs.append((f"output_blocks.{k}.{j}", f"up_blocks.{up}.upsamplers.0", "res", 0))
                else:
                    pairs.append((f"output_blocks.{k}.{j}.conv", f"up_blocks.{up}.upsamplers.0.conv", "plain", 0))
                ds //= 2
            k += 1
    pairs += [("out.0", "conv_norm_out", "plain", 0), ("out.2", "conv_out", "plain", 0)]
    if flags["class_cond"]:
        pairs.append(("label_emb", "class_embedding", "plain", 0))
    return pairs


def _split_qkv(w: torch.Tensor, heads: int, legacy: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ADM's qkv rows (3C[, C]) as q, k, v rows in diffusers' (head, channel) order."""
    c3 = w.shape[0]
    rest = w.shape[1:]
    d = c3 // (3 * heads)
    if legacy:
        parts = w.reshape(heads, 3, d, *rest).unbind(1)
    else:
        parts = w.reshape(3, heads, d, *rest).unbind(0)
    return tuple(p.reshape(heads * d, *rest) for p in parts)


def convert_state(sd: dict[str, torch.Tensor], pairs, legacy: bool, source: str) -> dict[str, torch.Tensor]:
    """Rename and reshape an ADM state dict by ``pairs``; a missing or left-over key is a one-line error naming it."""
    out, used = {}, set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise DiffSCMError(f"{source}: the flags expect key {key!r}, which the checkpoint lacks "
                               "(are these the flags of this checkpoint?)")
        used.add(key)
        return sd[key]

    for adm, ours, kind, heads in pairs:
        if kind == "plain":
            for p in ("weight", "bias"):
                if f"{adm}.{p}" in sd or p == "weight":
                    out[f"{ours}.{p}"] = take(f"{adm}.{p}")
        elif kind == "res":
            for a, o in RES.items():
                for p in ("weight", "bias"):
                    if f"{adm}.{a}.{p}" in sd or (a != "skip_connection"):
                        out[f"{ours}.{o}.{p}"] = take(f"{adm}.{a}.{p}")
        else:
            for p in ("weight", "bias"):
                out[f"{ours}.group_norm.{p}"] = take(f"{adm}.norm.{p}")
                qkv = take(f"{adm}.qkv.{p}")
                if qkv.shape[0] % (3 * heads):
                    raise DiffSCMError(f"{source}: key {adm}.qkv.{p} has {qkv.shape[0]} rows, not a multiple of 3 × "
                                       f"{heads} heads (check num_heads / num_head_channels)")
                q, k, v = _split_qkv(qkv.squeeze(-1) if p == "weight" else qkv, heads, legacy)
                out[f"{ours}.to_q.{p}"], out[f"{ours}.to_k.{p}"], out[f"{ours}.to_v.{p}"] = q, k, v
                proj = take(f"{adm}.proj_out.{p}")
                out[f"{ours}.to_out.0.{p}"] = proj.squeeze(-1) if p == "weight" else proj
    extra = sorted(set(sd) - used)
    if extra:
        raise DiffSCMError(f"{source}: key {extra[0]!r} is not part of the model the flags describe "
                           f"({len(extra)} such key{'s' if len(extra) > 1 else ''})")
    return out


def check_shapes(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """One-line error at the first tensor whose shape differs from the model the flags build."""
    want = model.state_dict()
    for name, t in state.items():
        if name not in want:
            raise DiffSCMError(f"{source}: converted key {name!r} has no place in the model (flags mismatch)")
        if tuple(t.shape) != tuple(want[name].shape):
            raise DiffSCMError(f"{source}: key {name!r} has shape {tuple(t.shape)}, the flags give "
                               f"{tuple(want[name].shape)} (are these the flags of this checkpoint?)")
    missing = sorted(set(want) - set(state))
    if missing:
        raise DiffSCMError(f"{source}: the model needs {missing[0]!r}, which the checkpoint does not provide")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A guided-diffusion ``.pt`` read with ``torch.load(weights_only=True)`` (no code runs), as float32 tensors."""
    import pickle
    import warnings

    path = Path(path)
    if not path.is_file():
        raise DiffSCMError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():    # torch warns about what it refuses; the error below says it in one line
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DiffSCMError(f"{path} is not a plain state dict; refused to unpickle it ({first[:160]})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise DiffSCMError(f"{path} cannot be read as a PyTorch checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise DiffSCMError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def convert_unet(sd: dict[str, torch.Tensor], flags: dict, source: str = "diffusion checkpoint"):
    """A :class:`~diffscm.models.DiffusionModel` holding an ADM UNet's weights. A class-conditional model gets a
    zero ∅ row after its 1000 label rows (ADM was not trained with a null label: ∅ is "no label information")."""
    from .diffusion import DiffusionModel

    state = convert_state(sd, unet_layout(flags), not flags["use_new_attention_order"], source)
    model = DiffusionModel(diffusion_config(flags))
    if flags["class_cond"]:
        emb = state["class_embedding.weight"]
        if emb.shape[0] != NUM_CLASSES:
            raise DiffSCMError(f"{source}: key 'label_emb.weight' has {emb.shape[0]} rows, not {NUM_CLASSES} classes")
        state["class_embedding.weight"] = torch.cat([emb, emb.new_zeros(1, emb.shape[1])])
    state = {f"unet.{k}": v for k, v in state.items()}
    check_shapes(model, state, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---- the noisy classifier -----------------------------------------------------------------------------------------

class AttentionPool2d(nn.Module):
    """CLIP's attention pooling as ADM's classifier uses it: the mean token attends over all positions."""

    def __init__(self, spatial: int, channels: int, head_channels: int, out: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(channels, spatial ** 2 + 1))
        self.heads = channels // head_channels
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.c_proj = nn.Linear(channels, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding.to(x.dtype)
        x = x.transpose(1, 2)                                        # b, tokens, c
        q = self.to_q(x[:, :1])
        k, v = self.to_k(x), self.to_v(x)
        split = lambda y: y.view(b, y.shape[1], self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        h = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, 1, c)
        return self.c_proj(h[:, 0])


class ADMClassifier(Pretrained):
    """guided-diffusion's noisy ImageNet classifier (``EncoderUNetModel``, attention pooling): the UNet's encoder
    half and middle block in diffusers' layout, then norm, SiLU and attention pooling to the logits.
    ``log_prob`` makes it an anti-causal predictor of a categorical parent."""

    kind = "adm-classifier"

    def __init__(self, config: dict):
        super().__init__(config)
        c = config
        mult, width = list(c["channel_mult"]), c["width"]
        attn = set(c["attention_ds"])
        temb = 4 * width
        self.conv_in = nn.Conv2d(c["in_channels"], width, 3, padding=1)
        self.time_embedding = TimestepEmbedding(width, temb)
        self.down_blocks = nn.ModuleList()
        prev, ds = width, 1
        for i, m in enumerate(mult):
            w = width * m
            self.down_blocks.append(DownBlock(prev, w, temb, c["depth"], 32, 0.0, ds in attn, w // c["head_channels"],
                                              ("resnet" if c["updown"] else "conv") if i < len(mult) - 1 else None,
                                              c["scale_shift"]))
            prev, ds = w, ds * 2 if i < len(mult) - 1 else ds
        self.mid_block = MidBlock(prev, temb, 32, 0.0, prev // c["head_channels"], 32, c["scale_shift"])
        self.norm_out = nn.GroupNorm(32, prev, eps=EPS)
        self.pool = AttentionPool2d(c["image_size"] // ds, prev, c["head_channels"], c["num_classes"])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embedding(timestep_embedding(t, self.conv_in.out_channels).to(self.conv_in.weight.dtype))
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(h, emb)
        h = self.mid_block(h, emb)
        return self.pool(F.silu(self.norm_out(h)))

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """log p(class | x_t, t): the log-softmax of the logits at ``value``."""
        return self(x, t).log_softmax(dim=1).gather(1, value.long().view(-1, 1)).squeeze(1)


def classifier_config(flags: dict) -> dict:
    if flags["classifier_pool"] != "attention":
        raise DiffSCMError(f"classifier_pool {flags['classifier_pool']!r}: only the published attention pooling is "
                           "supported")
    width = flags["classifier_width"]
    mult = CHANNEL_MULT[flags["image_size"]]
    if any((width * m) % 64 for m in mult):
        raise DiffSCMError(f"classifier_width {width}: every level's width must be a multiple of the 64-channel heads")
    return {"image_size": flags["image_size"], "in_channels": 3, "width": width, "channel_mult": list(mult),
            "depth": flags["classifier_depth"], "head_channels": 64,
            "attention_ds": sorted(_attention_ds(flags, "classifier_attention_resolutions")),
            "scale_shift": flags["classifier_use_scale_shift_norm"], "updown": flags["classifier_resblock_updown"],
            "num_classes": NUM_CLASSES, "target": "class", "target_kind": "categorical",
            "schedule": flags["noise_schedule"], "num_train_timesteps": 1000, "source": "guided-diffusion"}


def convert_classifier(sd: dict[str, torch.Tensor], flags: dict, source: str = "classifier checkpoint") -> ADMClassifier:
    """An :class:`ADMClassifier` holding a guided-diffusion classifier's weights (its attention blocks use the
    legacy qkv order, its pooling the new one)."""
    cfg = classifier_config(flags)
    mult, attn = cfg["channel_mult"], set(cfg["attention_ds"])
    f = {**flags, "num_head_channels": 64, "_updown": cfg["updown"]}
    pairs, _ = _down_layout(f, mult, attn, cfg["depth"], cfg["width"])
    pairs.append(("out.0", "norm_out", "plain", 0))
    sd = dict(sd)
    pool = {k: sd.pop(k) for k in list(sd) if k.startswith("out.2.")}
    state = convert_state(sd, pairs, True, source)
    for k in ("positional_embedding", "qkv_proj.weight", "qkv_proj.bias", "c_proj.weight", "c_proj.bias"):
        if f"out.2.{k}" not in pool:
            raise DiffSCMError(f"{source}: the flags expect key 'out.2.{k}', which the checkpoint lacks")
    state["pool.positional_embedding"] = pool["out.2.positional_embedding"]
    heads = pool["out.2.qkv_proj.weight"].shape[1] // 64
    for p in ("weight", "bias"):
        w = pool[f"out.2.qkv_proj.{p}"]
        q, k, v = _split_qkv(w.squeeze(-1) if p == "weight" else w, heads, legacy=False)
        state[f"pool.to_q.{p}"], state[f"pool.to_k.{p}"], state[f"pool.to_v.{p}"] = q, k, v
        c = pool[f"out.2.c_proj.{p}"]
        state[f"pool.c_proj.{p}"] = c.squeeze(-1) if p == "weight" else c
    model = ADMClassifier(cfg)
    check_shapes(model, state, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ADMClassifier", "PRESETS", "convert_classifier", "convert_unet", "count_parameters",
           "diffusion_config", "load_state_dict_file", "parse_flags", "unet_config"]
