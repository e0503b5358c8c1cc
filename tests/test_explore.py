"""``diffscm explore``: the HTTP API through the real server on a free port, with the shipped models."""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from diffscm.data import load_mnist
from diffscm.scm.core import SCM
from diffscm.scm.mechanisms import InferenceOptions
from diffscm.service.explorer import Explorer, png_b64
from diffscm.service.server import running

pytestmark = pytest.mark.slow


def call(url: str, body=None, raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def mnist_explorer():
    ex = Explorer(SCM.from_pretrained("mnist"), n_images=8, cache_size=4, max_steps=50)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def url(mnist_explorer):
    with running(mnist_explorer) as base:
        yield base


def test_model_contract(url):
    status, info = call(url + "/api/model")
    assert status == 200
    (digit,) = [v for v in info["variables"] if v["name"] == "digit"]
    assert digit["kind"] == "categorical" and digit["categories"] == [str(i) for i in range(10)]
    assert info["image"] == {"name": "image", "shape": [1, 28, 28]}
    assert info["defaults"]["steps"] == 4 and info["defaults"]["w"] == {"digit": 2.0}
    assert info["weighted_parents"] == ["digit"] and info["n_images"] == 8 and info["health_parent"] is None
    status, imgs = call(url + "/api/images")
    x, y = load_mnist("test")
    assert [i["values"]["digit"] for i in imgs["images"]] == y[:8].tolist()
    assert np.array_equal(decode(imgs["images"][3]["png"]), x[3])
    page = urllib.request.urlopen(url + "/", timeout=30).read().decode()
    assert "/api/counterfactual" in page and "<title>diffscm explorer</title>" in page


def test_counterfactual_contract_and_cache(url):
    x, y = load_mnist("test")
    # the null intervention returns the image (exact inversion), and the first call abducts
    status, r = call(url + "/api/counterfactual", {"index": 5, "do": {}, "options": {"seed": 11}})
    assert status == 200, r
    assert set(r) >= {"counterfactual", "values", "seconds", "factual", "difference", "factual_values"}
    assert np.abs(decode(r["counterfactual"]).astype(int) - x[5]).max() <= 1
    assert r["values"] == {"digit": float(y[5])} and isinstance(r["seconds"], float)
    assert r["cached_abduction"] is False
    # a new intervention reuses the latent: one decoding; the judge reads the new digit
    target = (int(y[5]) + 3) % 10
    status, r2 = call(url + "/api/counterfactual", {"index": 5, "do": {"digit": target}, "options": {"seed": 11}})
    assert status == 200 and r2["cached_abduction"] is True and r2["values"] == {"digit": float(target)}
    assert r2["intervened"] == ["digit"]
    cf = decode(r2["counterfactual"])
    assert cf.shape == (28, 28) and np.abs(cf.astype(int) - x[5]).mean() > 5
    # the same request again gives the same image; a class given by name works as by number
    _, r3 = call(url + "/api/counterfactual", {"index": 5, "do": {"digit": str(target)}, "options": {"seed": 11}})
    assert r3["counterfactual"] == r2["counterfactual"]
    # a prediction-only knob (w, with guidance on the intervened parents) keeps the latent; steps do not
    _, r4 = call(url + "/api/counterfactual", {"index": 5, "do": {"digit": target}, "options": {"seed": 11, "w": 3}})
    assert r4["cached_abduction"] is True and r4["counterfactual"] != r2["counterfactual"]
    _, r5 = call(url + "/api/counterfactual", {"index": 5, "do": {"digit": target}, "options": {"seed": 11, "steps": 6}})
    assert r5["cached_abduction"] is False


def test_upload_infers_the_factual_digit(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = load_mnist("test")
    status, r = call(url + "/api/counterfactual", {"image": png_b64(x[0]), "do": {}})
    assert status == 200, r
    assert r["factual_values"] == {"digit": float(y[0])}
    assert any("inferred" in n for n in r["notes"])
    assert np.abs(decode(r["counterfactual"]).astype(int) - x[0]).max() <= 1
    status, r = call(url + "/api/counterfactual", {"image": png_b64(x[1]), "observed": {"digit": 4}, "do": {"digit": 9}})
    assert status == 200 and r["factual_values"] == {"digit": 4.0} and r["values"] == {"digit": 9.0}
    assert list(tmp_path.iterdir()) == []                      # nothing written where the server runs


def test_latent_cache_is_bounded(url, mnist_explorer):
    for i in range(6):
        assert call(url + "/api/counterfactual", {"index": i, "do": {"digit": 1}})[0] == 200
    assert len(mnist_explorer._latents) <= 4


BAD = [
    ({"index": 0, "do": {"colour": 3}}, 400, "unknown variable 'colour'"),
    ({"index": 0, "do": {"digit": 12}}, 400, "digit"),
    ({"index": 0, "do": {"digit": 2.5}}, 400, "digit"),
    ({"index": 0, "do": {"digit": [1]}}, 400, "not a number"),
    ({"index": 99}, 400, "out of range"),
    ({"index": "0"}, 400, "integer"),
    ({"index": 0, "image": "AAAA"}, 400, "exactly one"),
    ({"do": {}}, 400, "exactly one"),
    ({"index": 0, "colour": 1}, 400, "unknown field"),
    ({"index": 0, "options": {"temperature": 1}}, 400, "unknown option"),
    ({"index": 0, "options": {"steps": 51}}, 400, "allows"),
    ({"index": 0, "options": {"steps": 0}}, 400, "steps"),
    ({"index": 0, "options": {"ratio": 2}}, 400, "ratio"),
    ({"index": 0, "options": {"w": {"thickness": 2}}}, 400, "thickness"),
    ({"image": "not base64!"}, 400, "base64"),
    ({"image": base64.b64encode(b"GIF89a....").decode()}, 400, "PNG or JPEG"),
    ({"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()}, 400, "cannot be decoded"),
    ({"image": 5}, 400, "base64 string"),
    ({"index": 0, "observed": {"digit": 1}}, 400, "observed goes with image"),
    ([1, 2], 400, "JSON object"),
]


@pytest.mark.parametrize("body,status,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_one_line_4xx(url, body, status, words):
    got, r = call(url + "/api/counterfactual", body)
    assert got == status and words in r["error"] and "\n" not in r["error"], r


def test_bad_bodies_and_routes(url):
    assert call(url + "/api/counterfactual", raw=b"{not json")[0] == 400
    host, port = url.rsplit("/", 1)[1].split(":")
    # a declared length over the limit is refused before the body is read ...
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/api/counterfactual")
    conn.putheader("Content-Length", str(64 * 1024 * 1024))
    conn.endheaders()
    conn.send(b"x" * 1024)
    r = conn.getresponse()
    assert r.status == 413 and "body over" in json.loads(r.read())["error"]
    conn.close()
    # ... and a chunked body is cut off once it passes the limit
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/api/counterfactual", body=iter([b"x" * 1024 * 1024] * 5), encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "body over" in json.loads(r.read())["error"]
    conn.close()
    big = Image.new("L", (3000, 3000))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    got, r = call(url + "/api/counterfactual", {"image": base64.b64encode(buf.getvalue()).decode()})
    assert got == 400 and "largest side" in r["error"]
    got, r = call(url + "/api/nothing")
    assert got == 404 and r["error"]
    assert call(url + "/api/model")[0] == 200                     # still serving


def test_twenty_concurrent_requests(url):
    x, y = load_mnist("test")
    bodies = [{"index": i % 4, "do": {"digit": (i * 3) % 10}, "options": {"seed": 1}} for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda b: call(url + "/api/counterfactual", b), bodies))
    assert all(s == 200 for s, _ in results), [r for s, r in results if s != 200]
    for b, (_, r) in zip(bodies, results):
        assert r["values"]["digit"] == b["do"]["digit"] and r["factual_values"]["digit"] == y[b["index"]]
    # equal requests, answered in whatever order, give equal images
    seen = {}
    for b, (_, r) in zip(bodies, results):
        seen.setdefault(json.dumps(b, sort_keys=True), set()).add(r["counterfactual"])
    assert all(len(v) == 1 for v in seen.values())


def test_a_full_queue_is_told_to_retry():
    ex = Explorer(SCM.from_pretrained("mnist"), n_images=2, max_waiting=2)
    try:
        with running(ex) as base, ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda i: call(base + "/api/counterfactual",
                                                   {"index": i % 2, "do": {"digit": i % 10}, "options": {"steps": 20}}),
                                    range(20)))
    finally:
        ex.close()
    codes = [s for s, _ in results]
    assert set(codes) <= {200, 503} and codes.count(200) >= 2
    assert all("busy" in r["error"] for s, r in results if s == 503)


def test_morpho_true_counterfactual_and_lesion_overlay():
    ex = Explorer(SCM.from_pretrained("morphomnist"), n_images=4)
    try:
        f = ex.factual(1)
        r = ex.counterfactual(f, {"thickness": 4.5})
        assert r["values"]["thickness"] == 4.5 and "true_counterfactual" in r and r["true_l1"] < 40
        assert "true_counterfactual" not in ex.counterfactual(f, {"digit": 3})   # a new digit has no true image
        assert ex.model_info()["true_counterfactual"] is True
    finally:
        ex.close()
    ex = Explorer(SCM.from_pretrained("lesion-mnist"), n_images=4)
    try:
        assert ex.model_info()["health_parent"] == "lesion"
        r = ex.counterfactual(ex.factual(0), {"lesion": 0})
        assert decode(r["overlay"]).shape == (28, 28, 3)
    finally:
        ex.close()


def test_abduction_key_keeps_only_what_abduction_reads():
    base = InferenceOptions(guidance="intervened", cfg_weights={"digit": 2.0})
    assert base.abduction_key() == InferenceOptions(guidance="intervened", cfg_weights={"digit": 5.0}, eta=0.5,
                                                    seed=3).abduction_key()
    assert base.abduction_key() != InferenceOptions(guidance="intervened", steps=51).abduction_key()
    assert InferenceOptions(guidance="all", scales={"d": 1.0}).abduction_key() != \
        InferenceOptions(guidance="all", scales={"d": 2.0}).abduction_key()
    assert InferenceOptions(abduction="null", cfg_scale=3.0).abduction_key() == \
        InferenceOptions(abduction="null", cfg_scale=10.0).abduction_key()


def test_the_command_serves_on_localhost_and_refuses_a_taken_port():
    exe = [sys.executable, "-c", "from diffscm.cli import main; main()"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(exe + ["explore", "--n-images", "2", "--port", "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert line.startswith("diffscm explorer on http://127.0.0.1:"), line + p.stderr.read()
        base = line.split()[3].rstrip("/")
        assert call(base + "/api/model")[1]["n_images"] == 2
        port = int(base.rsplit(":", 1)[1])
        taken = subprocess.run(exe + ["explore", "--port", str(port)], capture_output=True, text=True, env=env,
                               timeout=120)
        assert taken.returncode == 2 and taken.stderr.count("\n") == 1 and "cannot listen" in taken.stderr
    finally:
        p.terminate()
        p.wait(30)
    with socket.socket() as s:    # the port is free again once the server stops (as a server binds it)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_a_fitted_scm_on_its_folder(tmp_path):
    # a continuous parent's slider value reaches the image's parents; an upload without a way to infer a value asks
    # for it in `observed`; a folder with fewer images than asked for offers them all
    from diffscm.scm.graph import CausalGraph
    from diffscm.train import fit as F
    from test_fit import GRAPH, make_dataset

    data, out = make_dataset(tmp_path / "data", n_test=5), tmp_path / "scm"
    F.fit_scm(CausalGraph.from_dict(GRAPH), data, out, budget="quick", steps_scale=0.004, batch_size=8,
              progress=False, log=lambda s: None, device="cpu")
    ex = Explorer(SCM.from_pretrained(out), data_dir=data, n_images=64)
    try:
        assert len(ex.images) == 5
        info = ex.model_info()
        (hue,) = [v for v in info["variables"] if v["name"] == "hue"]
        assert (hue["low"], hue["high"]) == (0.0, 1.0)
        with running(ex) as base:
            status, r = call(base + "/api/counterfactual", {"index": 1, "do": {"hue": 0.9}, "options": {"steps": 3}})
            assert status == 200 and r["values"]["hue"] == pytest.approx(0.9) and r["intervened"] == ["hue"]
            status, r = call(base + "/api/counterfactual", {"index": 1, "do": {"hue": 1.5}})
            assert status == 400 and "hue" in r["error"]
            status, r = call(base + "/api/counterfactual", {"image": png_b64(ex.images[0].image)})
            assert status == 400 and r["error"].startswith("give the factual value of") and "in observed" in r["error"]
    finally:
        ex.close()
