"""guided-diffusion (ADM) checkpoints against the real implementation: small random-weight models built by the
``guided_diffusion`` package (``guided-diffusion-sdk``), saved as .pt, converted, and compared on ε and logits."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from diffscm.errors import DiffSCMError
from diffscm.models import adm

gd = pytest.importorskip("guided_diffusion.script_util")
torch.set_num_threads(2)

# Tiny widths of the published architectures: every flag the released checkpoints use appears at least once.
MODELS = {
    # the 256 model: legacy qkv order, num_head_channels, scale-shift, ResNet up/down, class-conditional, learned σ
    "256 conditional": "--image_size 256 --num_channels 32 --num_res_blocks 1 --attention_resolutions 32,16,8 "
                       "--num_head_channels 16 --class_cond True --learn_sigma True --resblock_updown True "
                       "--use_scale_shift_norm True",
    # the 128 model's num_heads (a fixed head count: head widths differ per level), without the other options
    "128 num_heads, plain": "--image_size 128 --num_channels 32 --num_res_blocks 1 --attention_resolutions 32,16,8 "
                           "--num_heads 4 --class_cond False --learn_sigma False --resblock_updown False "
                           "--use_scale_shift_norm False",
    # the 64 model: the new qkv order, three blocks per level
    "64 new attention order": "--image_size 64 --num_channels 32 --num_res_blocks 2 --attention_resolutions 32,16,8 "
                              "--num_head_channels 32 --use_new_attention_order True --class_cond True "
                              "--learn_sigma True --resblock_updown True --use_scale_shift_norm True",
}


def adm_model(flags: dict):
    keys = ["image_size", "num_channels", "num_res_blocks", "channel_mult", "learn_sigma", "class_cond",
            "attention_resolutions", "num_heads", "num_head_channels", "num_heads_upsample", "use_scale_shift_norm",
            "resblock_updown", "use_new_attention_order"]
    torch.manual_seed(0)
    model = gd.create_model(**{k: flags[k] for k in keys}).eval()
    with torch.no_grad():                      # off the zero inits, so that every weight matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", list(MODELS))
def test_diffusion_model_matches_guided_diffusion(name, tmp_path):
    flags = adm.parse_flags(MODELS[name])
    ref = adm_model(flags)
    torch.save(ref.state_dict(), tmp_path / "model.pt")
    ours = adm.convert_unet(adm.load_state_dict_file(tmp_path / "model.pt"), flags)
    s = flags["image_size"]
    x, t = torch.randn(2, 3, s, s), torch.tensor([3, 871])
    y = torch.tensor([207, 999]) if flags["class_cond"] else None
    with torch.no_grad():
        want = ref(x, t, y)[:, :3]                    # ε: the first half of a learned-σ output
        got = ours(x, t, y[:, None].float() if y is not None else None)
    assert got.shape == (2, 3, s, s)
    assert rel_err(got, want) <= 1e-4
    # the folder diffusers loads on its own, and ours reads back
    ours.save_diffusers(tmp_path / "diffusion")
    from diffscm.models import DiffusionModel

    back = DiffusionModel.from_pretrained(tmp_path / "diffusion")
    with torch.no_grad():
        assert rel_err(back(x, t, y[:, None].float() if y is not None else None), want) <= 1e-4
    if "attention_heads" not in ours.config["unet"]:
        from diffusers import UNet2DModel

        plain = UNet2DModel.from_pretrained(tmp_path / "diffusion").eval()
        with torch.no_grad():
            out = plain(x, t, class_labels=y).sample[:, :3]
        assert rel_err(out, want) <= 1e-4


def test_autocast_eps_is_close():
    flags = adm.parse_flags(MODELS["256 conditional"].replace("--image_size 256", "--image_size 64"))
    model = adm.convert_unet(adm_model(flags).state_dict(), flags)
    x, t, y = torch.randn(2, 3, 64, 64), torch.tensor([10, 700]), torch.tensor([[3.0], [207.0]])
    with torch.no_grad():
        want = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x, t, y)
    assert got.dtype == torch.bfloat16 and rel_err(got.float(), want) < 0.05     # bfloat16 keeps 8 bits


def test_num_heads_with_one_head_width_needs_no_extension():
    flags = adm.parse_flags("--image_size 64 --num_channels 32 --attention_resolutions 8 --num_heads 2")
    cfg = adm.unet_config(flags)
    assert cfg["attention_head_dim"] == 64 and "attention_heads" not in cfg   # level 3 (128 ch) and the mid block


@pytest.mark.parametrize("size, extra", [(64, "--classifier_resblock_updown True"),
                                         (256, "--classifier_resblock_updown False --classifier_use_scale_shift_norm False")])
def test_classifier_matches_guided_diffusion(size, extra, tmp_path):
    # the 64-channel attention heads that guided-diffusion hard-codes need a width that is a multiple of 64
    flags = adm.parse_flags(f"--image_size {size} --classifier_width 64 --classifier_depth 1 "
                            "--classifier_attention_resolutions 32,16,8 --classifier_use_scale_shift_norm True "
                            f"--classifier_pool attention {extra}")
    torch.manual_seed(0)
    ref = gd.create_classifier(**{k: flags[k] for k in ["image_size", "classifier_use_fp16", "classifier_width",
                                                         "classifier_depth", "classifier_attention_resolutions",
                                                         "classifier_use_scale_shift_norm",
                                                         "classifier_resblock_updown", "classifier_pool"]}).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(ref.state_dict(), tmp_path / "classifier.pt")
    ours = adm.convert_classifier(adm.load_state_dict_file(tmp_path / "classifier.pt"), flags)
    x, t = torch.randn(2, 3, size, size), torch.tensor([10, 600])
    with torch.no_grad():
        want, got = ref(x, t), ours(x, t)
    assert got.shape == (2, 1000) and rel_err(got, want) <= 1e-4
    lp = ours.log_prob(x, t, torch.tensor([3, 207]))
    assert torch.allclose(lp, want.log_softmax(1)[[0, 1], [3, 207]], atol=1e-4)
    ours.save_pretrained(tmp_path / "clf")
    back = adm.ADMClassifier.from_pretrained(tmp_path / "clf")
    with torch.no_grad():
        assert rel_err(back(x, t), want) <= 1e-4


def test_fp16_checkpoints_load_as_float32(tmp_path):
    flags = adm.parse_flags(MODELS["128 num_heads, plain"])
    ref = adm_model(flags)
    torch.save({k: v.half() for k, v in ref.state_dict().items()}, tmp_path / "half.pt")
    sd = adm.load_state_dict_file(tmp_path / "half.pt")
    assert all(v.dtype == torch.float32 for v in sd.values())
    adm.convert_unet(sd, flags)


def test_flags_parse_verbatim_readme_strings():
    f = adm.parse_flags(*adm.PRESETS["imagenet-256-cond"].split(" --image_size 256 --classifier", 1)[:1])
    assert f["image_size"] == 256 and f["class_cond"] is True and f["num_head_channels"] == 64
    cfg = adm.unet_config(adm.parse_flags(adm.PRESETS["imagenet-256-cond"]))
    assert cfg["block_out_channels"] == [256, 256, 512, 512, 1024, 1024]
    assert cfg["down_block_types"][:3] == ["ResnetDownsampleBlock2D"] * 3 and cfg["out_channels"] == 6
    assert cfg["up_block_types"][:3] == ["AttnUpBlock2D"] * 3


@pytest.mark.parametrize("flags, words", [
    ("--image_size 64 --bogus 3", "unknown guided-diffusion flag '--bogus'"),
    ("--image_size 64 --class_cond maybe", "not a boolean"),
    ("--image_size 96", "image_size 96"),
    ("--image_size 64 --num_channels", "needs a value"),
])
def test_bad_flags(flags, words):
    with pytest.raises(DiffSCMError, match=words.replace("(", r"\(")):
        adm.parse_flags(flags)


def test_checkpoint_that_does_not_match_its_flags_names_the_key(tmp_path):
    flags = adm.parse_flags(MODELS["256 conditional"])
    torch.save(adm_model(flags).state_dict(), tmp_path / "m.pt")
    sd = adm.load_state_dict_file(tmp_path / "m.pt")
    wrong = adm.parse_flags(MODELS["256 conditional"].replace("--class_cond True", "--class_cond False"))
    with pytest.raises(DiffSCMError, match="key 'label_emb.weight' is not part of the model"):
        adm.convert_unet(sd, wrong)
    wider = adm.parse_flags(MODELS["256 conditional"].replace("--num_channels 32", "--num_channels 64"))
    with pytest.raises(DiffSCMError, match="key 'unet.conv_in.weight' has shape"):
        adm.convert_unet(sd, wider)
    deeper = adm.parse_flags(MODELS["256 conditional"].replace("--num_res_blocks 1", "--num_res_blocks 2"))
    with pytest.raises(DiffSCMError, match="the flags expect key"):
        adm.convert_unet(sd, deeper)


def test_pickles_and_non_state_dicts_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DiffSCMError, match="not a plain state dict"):
        adm.load_state_dict_file(tmp_path / "evil.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(DiffSCMError, match="is not a state dict"):
        adm.load_state_dict_file(tmp_path / "list.pt")
    with pytest.raises(DiffSCMError, match="does not exist"):
        adm.load_state_dict_file(tmp_path / "nope.pt")


def test_center_crop_is_guided_diffusions():
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 700, 3), dtype=np.uint8))
    from diffscm.data.user_images import center_crop

    out = center_crop(img, 64)
    assert out.size == (64, 64)
    # by hand: 300 >= 128 -> box-halve to 350x150, then 150 >= 128 -> 175x75; scale 64/75; crop the centre
    step = img.resize((350, 150), Image.BOX).resize((175, 75), Image.BOX)
    step = step.resize((round(175 * 64 / 75), 64), Image.BICUBIC)
    left = (step.size[0] - 64) // 2
    assert np.array_equal(np.asarray(out), np.asarray(step)[:, left:left + 64])


TINY_64 = ("--image_size 64 --num_channels 32 --num_res_blocks 1 --attention_resolutions 16 --num_head_channels 32 "
           "--class_cond True --learn_sigma True --resblock_updown True --use_scale_shift_norm True "
           "--classifier_width 64 --classifier_depth 1 --classifier_attention_resolutions 16 --classifier_scale 2.0")


@pytest.fixture(scope="module")
def tiny_adm(tmp_path_factory):
    """A tiny 64 px class-conditional ADM model and classifier saved as .pt, and a photo-like non-square JPEG."""
    from PIL import Image

    d = tmp_path_factory.mktemp("adm")
    flags = adm.parse_flags(TINY_64)
    torch.save(adm_model(flags).state_dict(), d / "model.pt")
    torch.manual_seed(1)
    clf = gd.create_classifier(64, False, 64, 1, "16", True, True, "attention")
    torch.save(clf.state_dict(), d / "classifier.pt")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(d / "cat.jpg")
    return d


def run_cli(monkeypatch, *args):
    import sys

    from diffscm import cli

    monkeypatch.setattr(sys, "argv", ["diffscm", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
        raise SystemExit(0)
    return exc.value.code


def test_convert_then_counterfactual_by_class_name(tiny_adm, tmp_path, monkeypatch, capsys):
    from diffscm import SCM

    out = tmp_path / "adm-64"
    assert run_cli(monkeypatch, "convert", "adm", "--diffusion", tiny_adm / "model.pt", "--classifier",
                   tiny_adm / "classifier.pt", "--model-flags", TINY_64, "--out", out) == 0
    scm = SCM.from_pretrained(out)
    assert scm.graph.variables["class"].categories[207] == "golden retriever"
    assert scm.defaults.scales == {"class": 2.0} and scm.image_mechanism.mechanism(scm.defaults) == "conditional"
    runs = {}
    for value in ("golden_retriever", "207"):
        runs[value] = tmp_path / f"cf-{value}"
        assert run_cli(monkeypatch, "counterfactual", "--model", out, "--image", tiny_adm / "cat.jpg", "--do",
                       f"class={value}", "--steps", 4, "--out", runs[value], "--quiet") == 0
    err = capsys.readouterr().err
    assert "centre-cropped 120×90 to 64×64" in err and "factual class inferred" in err
    a, b = (np.load(runs[v] / "counterfactuals.npz") for v in runs)
    assert a["counterfactual"].shape == (1, 3, 64, 64) and a["class_cf"].tolist() == [207]
    assert np.array_equal(a["counterfactual"], b["counterfactual"])
    bf = tmp_path / "bf16"          # runs under autocast (its ε: test_autocast_eps_is_close); a random model's
    assert run_cli(monkeypatch, "counterfactual", "--model", out, "--image", tiny_adm / "cat.jpg", "--do",   # images
                   "class=207", "--steps", 4, "--mixed-precision", "bf16", "--out", bf, "--quiet") == 0  # drift apart
    assert np.load(bf / "counterfactuals.npz")["counterfactual"].shape == (1, 3, 64, 64)
    null = tmp_path / "null"
    assert run_cli(monkeypatch, "counterfactual", "--model", out, "--image", tiny_adm / "cat.jpg", "--null",
                   "--observed", "class=tabby", "--steps", 4, "--out", null, "--quiet") == 0
    z = np.load(null / "counterfactuals.npz")
    assert np.abs(z["counterfactual"].astype(int) - z["factual"].astype(int)).max() <= 1   # exact inversion


@pytest.mark.parametrize("case", ["pickle", "flags", "class"])
def test_convert_bad_inputs_are_one_line_and_write_nothing(case, tiny_adm, tmp_path, monkeypatch, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    out = tmp_path / "out"
    args = ["convert", "adm", "--diffusion", tiny_adm / "model.pt", "--model-flags", TINY_64, "--out", out]
    if case == "pickle":
        (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
        args[3], words = tmp_path / "evil.pt", "not a plain state dict"
    elif case == "flags":
        args[5], words = TINY_64.replace("--num_res_blocks 1", "--num_res_blocks 2"), "the flags expect key"
    else:
        args += ["--classifier", tiny_adm / "model.pt"]
        words = "classifier checkpoint"
    assert run_cli(monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "pwned" not in capsys.readouterr().out
    assert not out.exists()
