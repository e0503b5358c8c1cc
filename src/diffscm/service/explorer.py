"""An interactive counterfactual session over one SCM: the state behind ``diffscm explore`` and its HTTP API.

It only arranges the library's own steps (:func:`~diffscm.scm.core.abduct`, :func:`~diffscm.scm.core.act`,
:func:`~diffscm.scm.core.predict`). The abducted latent of each image is cached under the options it depends on
(:meth:`~diffscm.scm.mechanisms.InferenceOptions.abduction_key`), so a new intervention, weight or scale costs one
decoding. One lock serialises the model; a bounded number of requests may wait for it, the rest are told to retry.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import from_model_range, to_model_range
from ..errors import DiffSCMError
from ..eval.localize import anomaly_map
from ..scm.core import SCM, abduct, act, batch_generator, predict
from .factuals import load_factuals, resolve_do

# Parent names under which a binary image parent is read as a health status (0 = healthy): the page offers the
# healthy counterfactual with its anomaly overlay, as in "What is Healthy?".
HEALTH_PARENTS = ("lesion", "anomaly", "disease", "tumour", "tumor", "pathology")
OPTION_KEYS = ("steps", "ratio", "w", "scale", "cfg_scale", "eta", "seed")
MAX_UPLOAD_SIDE = 2048


class Busy(Exception):
    """More requests wait for the model than the session admits; the client should retry."""


@dataclass
class Factual:
    """One factual image (uint8, H×W or C×H×W) with every attribute's factual value."""

    image: np.ndarray
    values: dict[str, float]
    key: str
    index: int | None = None
    source_digit: np.ndarray | None = None     # Morpho-MNIST: the MNIST digit the generator rendered it from
    notes: list[str] = field(default_factory=list)


def png_bytes(img: np.ndarray) -> bytes:
    """uint8 H×W, H×W×3 or 3×H×W -> PNG."""
    from PIL import Image

    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a.astype(np.uint8))).save(buf, format="PNG")
    return buf.getvalue()


def png_b64(img: np.ndarray) -> str:
    return base64.b64encode(png_bytes(img)).decode()


def heat(m: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """A [0, 1] map as an 'inferno' RGB image (uint8 H×W×3), stretched to its maximum (at least ``floor``) so
    that small changes stay visible and no change stays black."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.clip(m / max(float(m.max()), floor), 0, 1))[..., :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, m: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """The factual image in grey with the anomaly map ``m`` (normalised to its maximum) in red on top."""
    grey = image.astype(np.float32).mean(0) if image.ndim == 3 else image.astype(np.float32)
    w = alpha * np.clip(m / max(float(m.max()), 1e-6), 0, 1)
    rgb = np.stack([grey] * 3, -1)
    rgb = (1 - w[..., None]) * rgb + w[..., None] * np.array([255.0, 32.0, 32.0])
    return rgb.round().clip(0, 255).astype(np.uint8)


class Explorer:
    """Counterfactuals of test images or uploads under any do(), with the abducted latents cached.

    ``data_dir``/``split`` choose the images as ``diffscm counterfactual`` does (the built-in MNIST and Morpho-MNIST
    splits, or a dataset folder); a lesion SCM without one gets Lesion-MNIST test images made from MNIST.
    """

    def __init__(self, scm: SCM, data_dir: Path | None = None, split: str = "test", n_images: int = 64,
                 cache_size: int = 32, max_waiting: int = 32, max_steps: int = 250):
        self.scm = scm
        self.max_steps = max_steps
        self.lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_waiting)
        self._latents: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._cache_size = cache_size
        self._tmp = tempfile.TemporaryDirectory(prefix="diffscm-explore-")
        self.names = [v for v in scm.graph.variables if v != scm.image_name]
        self.health = next((p for p in scm.graph.image.parents if p in HEALTH_PARENTS
                            and scm.graph.variables[p].kind == "categorical"
                            and scm.graph.variables[p].num_classes == 2), None)
        self.images = self._load_images(data_dir, split, n_images)

    # ------------------------------------------------------------------ data

    def _load_images(self, data_dir: Path | None, split: str, n: int) -> list[Factual]:
        notes: list[str] = []
        morpho_builtin = data_dir is None and set(self.names) == {"digit", "thickness", "intensity"}
        try:
            if self.health is not None and data_dir is None:
                from ..data.lesions import lesion_mnist

                sp = lesion_mnist(0, {"test": n}, size=self.scm.image_mechanism.diffusion.image_shape[-1])["test"]
                x_u8 = sp["images"]
                obs = {self.health: torch.as_tensor(sp["lesion"])}
                if "digit" in self.names:
                    obs["digit"] = torch.as_tensor(sp["digit"])
                idx = np.arange(len(x_u8))
            else:
                # a folder may hold fewer than n images: take them all, then the first n
                x_u8, obs, idx = load_factuals(self.scm, split, f"0:{n}" if data_dir is None else "0:", [], {},
                                               data_dir, notes)
                x_u8, idx, obs = x_u8[:n], np.asarray(idx)[:n], {k: v[:n] for k, v in obs.items()}
        except DiffSCMError as exc:
            if "no built-in dataset" in str(exc):
                raise DiffSCMError("this model has no built-in test images: pass --data-dir with a dataset folder "
                                   "(images/ and labels.csv)") from None
            raise
        missing = [m for m in self.names if m not in obs]
        if missing:
            raise DiffSCMError(f"the test images have no value of {missing[0]}")
        sources = None
        if morpho_builtin:
            from ..data import load_mnist

            sources = load_mnist(split, None)[0][idx]
        out = []
        for j, i in enumerate(np.asarray(idx).tolist()):
            vals = {k: float(v[j]) for k, v in obs.items()}
            out.append(Factual(x_u8[j], vals, f"index:{i}", index=j,
                               source_digit=None if sources is None else sources[j]))
        return out

    def factual(self, index: object) -> Factual:
        if isinstance(index, bool) or not isinstance(index, int):
            raise DiffSCMError(f"index must be an integer, got {json.dumps(index)}")
        if not 0 <= index < len(self.images):
            raise DiffSCMError(f"index {index} is out of range (0..{len(self.images) - 1})")
        return self.images[index]

    def upload(self, data: object, observed: object = None) -> Factual:
        """A base64 PNG/JPEG from a client: decoded, checked, written only to this session's temporary folder,
        and its unknown factual values inferred as ``diffscm counterfactual --image`` infers them."""
        from PIL import Image, UnidentifiedImageError

        if not isinstance(data, str):
            raise DiffSCMError("image must be a base64 string of a PNG or JPEG file")
        if data.startswith("data:"):
            data = data.split(",", 1)[-1]
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise DiffSCMError("image is not valid base64") from None
        if not (raw.startswith(b"\x89PNG\r\n\x1a\n") or raw.startswith(b"\xff\xd8\xff")):
            raise DiffSCMError("image is not a PNG or JPEG file")
        try:
            with Image.open(io.BytesIO(raw)) as img:
                if max(img.size) > MAX_UPLOAD_SIDE:
                    raise DiffSCMError(f"image is {img.size[0]}×{img.size[1]}; the largest side allowed is "
                                       f"{MAX_UPLOAD_SIDE}")
                img.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DiffSCMError(f"image cannot be decoded ({why})") from None
        obs = self._observed(observed)
        digest = hashlib.sha256(raw + json.dumps(obs, sort_keys=True).encode()).hexdigest()[:24]
        suffix = ".png" if raw.startswith(b"\x89PNG") else ".jpg"
        path = Path(self._tmp.name) / f"upload-{threading.get_ident()}{suffix}"
        path.write_bytes(raw)
        notes: list[str] = []
        try:
            with self.turn():
                x_u8, vals, _ = load_factuals(self.scm, None, None, [path], obs, None, notes, "observed")
        finally:
            path.unlink(missing_ok=True)
        return Factual(x_u8[0], {k: float(v[0]) for k, v in vals.items()}, f"upload:{digest}",
                       notes=[n.replace(f"{path.name}: ", "") for n in notes])

    def _observed(self, observed: object) -> dict[str, str]:
        if observed is None:
            return {}
        if not isinstance(observed, dict):
            raise DiffSCMError("observed must be an object {name: value}")
        for k, v in observed.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise DiffSCMError(f"observed {k}: {json.dumps(v)} is not a number or a class name")
        return {str(k): str(v) for k, v in observed.items()}

    @contextmanager
    def turn(self):
        """The model, to one request at a time; at most ``max_waiting`` requests queue for it, the rest get Busy."""
        if not self._slots.acquire(blocking=False):
            raise Busy("the server is busy: too many requests are waiting; retry shortly")
        try:
            with self.lock:
                yield
        finally:
            self._slots.release()

    # ------------------------------------------------------------------ options and interventions

    def options(self, overrides: object = None):
        """The SCM's defaults with a client's ``{"steps", "ratio", "w", "scale", "cfg_scale", "eta", "seed"}``;
        ``w`` and ``scale`` take a number (every parent) or ``{name: number}``."""
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise DiffSCMError("options must be an object")
        unknown = sorted(set(overrides) - set(OPTION_KEYS))
        if unknown:
            raise DiffSCMError(f"unknown option {unknown[0]!r} (use {', '.join(OPTION_KEYS)})")

        def number(key, v, cast=float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or \
                    (cast is int and v != int(v)):
                raise DiffSCMError(f"option {key}: {json.dumps(v)} is not {'an integer' if cast is int else 'a number'}")
            return cast(v)

        kw = {}
        for key in ("steps", "seed"):
            if key in overrides:
                kw[key] = number(key, overrides[key], int)
        for key in ("ratio", "cfg_scale", "eta"):
            if key in overrides:
                kw[key] = number(key, overrides[key])
        mech = self.scm.image_mechanism
        base = self.scm.options()
        for key, names, field_name in (("w", mech.diffusion.parent_names, "cfg_weights"),
                                       ("scale", list(mech.predictors), "scales")):
            if key not in overrides:
                continue
            v = overrides[key]
            table = dict(getattr(base, field_name))
            if isinstance(v, dict):
                for n, s in v.items():
                    if n not in names:
                        raise DiffSCMError(f"option {key}: {n!r} has none (there are: {', '.join(names) or 'none'})")
                    table[n] = number(f"{key}.{n}", s)
            else:
                if not names:
                    raise DiffSCMError(f"option {key}: this model has no parent it applies to")
                table = {n: number(key, v) for n in names}
            kw[field_name] = table
        if kw.get("steps", 1) > self.max_steps:
            raise DiffSCMError(f"option steps: {kw['steps']} is more than this server allows ({self.max_steps})")
        opts = self.scm.options(**kw)
        mech.grid(opts)
        mech.mechanism(opts)
        return opts

    def _do(self, do: object, factual: Factual, seed: int) -> dict[str, torch.Tensor]:
        if do is None:
            do = {}
        if not isinstance(do, dict):
            raise DiffSCMError("do must be an object {name: value}")
        spec = {}
        for k, v in do.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise DiffSCMError(f"do {k}: {json.dumps(v)} is not a number, a class name or 'random'")
            if isinstance(v, float) and not np.isfinite(v):
                raise DiffSCMError(f"do {k}: {v} is not finite")
            spec[str(k)] = str(v)
        observed = {k: self._tensor(k, [v]) for k, v in factual.values.items()}
        return resolve_do(self.scm, spec, observed, seed, flag="do")

    def _tensor(self, name: str, v) -> torch.Tensor:
        cat = self.scm.graph.variables[name].kind == "categorical"
        return torch.as_tensor(np.asarray(v, dtype=np.int64 if cat else np.float32))

    # ------------------------------------------------------------------ the counterfactual

    def counterfactual(self, factual: Factual, do: object = None, options: object = None) -> dict:
        """The counterfactual of one image: PNGs (base64) of it, the difference map, an anomaly overlay and, for
        the built-in Morpho-MNIST images, the true counterfactual; factual and counterfactual values; seconds."""
        opts = self.options(options)
        do_t = self._do(do, factual, opts.seed)
        with self.turn():
            t0 = time.perf_counter()
            dev = self.scm.device
            obs = {self.scm.image_name: to_model_range(factual.image[None]).to(dev),
                   **{k: self._tensor(k, [v]).to(dev) for k, v in factual.values.items()}}
            key = (factual.key, opts.abduction_key())
            noise = self._latents.get(key)
            cached = noise is not None
            if cached:
                self._latents.move_to_end(key)
            else:
                noise = abduct(self.scm, obs, opts)
                self._latents[key] = noise
                while len(self._latents) > self._cache_size:
                    self._latents.popitem(last=False)
            values = act(self.scm, obs, noise, {k: v.to(dev) for k, v in do_t.items()})
            img = predict(self.scm, noise, values, opts, generator=batch_generator(dev, opts.seed, 0))
            seconds = time.perf_counter() - t0
        cf = from_model_range(img.cpu())[0]
        chw = lambda a: (a if a.ndim == 3 else a[None]).astype(np.float32)[None] / 255.0  # noqa: E731
        diff = anomaly_map(chw(factual.image), chw(cf))[0]
        cf_values = {k: float(v[0]) for k, v in values.items()}
        out = {"counterfactual": png_b64(cf), "factual": png_b64(factual.image), "difference": png_b64(heat(diff)),
               "overlay": png_b64(overlay(factual.image, diff)), "values": cf_values,
               "factual_values": dict(factual.values), "intervened": sorted(do_t), "seconds": round(seconds, 4),
               "cached_abduction": cached, "difference_l1": round(float(diff.mean() * 255), 3)}
        truth = self.true_counterfactual(factual, do_t)
        if truth is not None:
            out["true_counterfactual"] = png_b64(truth)
            out["true_l1"] = round(float(np.abs(truth.astype(np.float32) - cf.astype(np.float32)).mean()), 3)
        return out

    def true_counterfactual(self, factual: Factual, do_t: dict[str, torch.Tensor]) -> np.ndarray | None:
        """Morpho-MNIST's generator applied to the source digit at the true counterfactual thickness and intensity
        (none for a new digit, which has no true image)."""
        if factual.source_digit is None or "digit" in do_t:
            return None
        from ..data import morphomnist as mm

        get = lambda k: None if k not in do_t else float(do_t[k][0])  # noqa: E731
        t, i = mm.true_counterfactual_values(factual.values["thickness"], factual.values["intensity"],
                                             get("thickness"), get("intensity"))
        return mm.render(factual.source_digit, float(t), float(i))

    # ------------------------------------------------------------------ description

    def model_info(self) -> dict:
        """The graph, every variable's support, the inference defaults and what the page can show."""
        mech = self.scm.image_mechanism
        opts = self.scm.options()
        variables = []
        for name in self.scm.graph.topological_order():
            v = self.scm.graph.variables[name]
            d = {"name": name, "kind": v.kind, "parents": list(v.parents)}
            if v.kind == "categorical":
                d["num_classes"] = v.num_classes
                d["categories"] = list(v.categories) if v.categories else [str(i) for i in range(v.num_classes)]
            elif v.kind == "continuous":
                d["low"], d["high"] = float(v.low), float(v.high)
            variables.append(d)
        shape = list(mech.diffusion.image_shape)
        return {"model": str(self.scm.path.name if self.scm.path else "scm"), "variables": variables,
                "image": {"name": self.scm.image_name, "shape": shape},
                "mechanism": mech.mechanism(opts),
                "defaults": {"steps": opts.steps, "ratio": opts.ratio, "w": dict(opts.cfg_weights),
                             "scale": dict(opts.scales), "cfg_scale": opts.cfg_scale, "eta": opts.eta,
                             "seed": opts.seed, "inversion": opts.inversion, "guidance": opts.guidance},
                "weighted_parents": list(mech.diffusion.parent_names), "guided_parents": list(mech.predictors),
                "max_steps": self.max_steps, "n_images": len(self.images),
                "true_counterfactual": any(f.source_digit is not None for f in self.images),
                "health_parent": self.health}

    def image_list(self) -> list[dict]:
        return [{"index": f.index, "png": png_b64(f.image), "values": f.values} for f in self.images]

    def close(self) -> None:
        self._tmp.cleanup()
