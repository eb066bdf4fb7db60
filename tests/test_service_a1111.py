"""The AUTOMATIC1111-compatible routes over real HTTP, with a tiny random Stable Diffusion model."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from test_service import TOKEN, Server, call, jcall

pytest.importorskip("fastapi")
pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def sd_server(tiny_sd, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    s = Server(home, "--sd-model", str(tiny_sd), "--device", "cpu").start()
    yield s
    s.stop()


def post(server, path, body, **kw):
    return jcall(server, "POST", path, body=json.dumps(body).encode(), ctype="application/json", **kw)


def b64png(a: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def infotext(text: str) -> dict:
    """An A1111 infotext read the way A1111's own reader splits it: the prompt lines, a
    'Negative prompt:' line, and a last line of 'Key: value' pairs (values may be quoted)."""
    lines = text.strip().split("\n")
    fields = {}
    # a pair: a key (no colon or comma), ": ", then a quoted value or one up to the next comma
    for key, value in re.findall(r'([^:,]+):\s*("(?:[^"\\]|\\.)*"|[^,]*)', lines[-1]):
        fields[key.strip()] = value.strip()
    prompt, negative, seen_negative = [], [], False
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            seen_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if seen_negative else prompt).append(line)
    return {"prompt": "\n".join(prompt), "negative": "\n".join(negative), "fields": fields}


def test_txt2img_answers_base64_pngs_whose_parameters_parse(sd_server):
    status, body = post(sd_server, "/sdapi/v1/txt2img", {
        "prompt": "a red barn in a field", "negative_prompt": "blurry", "seed": 7, "steps": 2, "cfg_scale": 5,
        "width": 64, "height": 64, "batch_size": 2, "n_iter": 1, "sampler_name": "Euler a",
        "enable_hr": False, "restore_faces": False})  # A1111 fields backdrop does not use are accepted
    assert status == 200, body
    assert len(body["images"]) == 2 and body["parameters"]["prompt"] == "a red barn in a field"
    info = json.loads(body["info"])
    assert info["all_seeds"] == [7, 8] and len(info["infotexts"]) == 2
    from backdrop.metadata import parse_a1111

    for k, b64 in enumerate(body["images"]):
        data = base64.b64decode(b64)
        im = Image.open(io.BytesIO(data))
        assert im.format == "PNG" and im.size == (64, 64)
        text = im.text["parameters"]
        assert text == info["infotexts"][k]
        for parsed in (infotext(text), parse_a1111(text)):
            assert parsed["prompt"] == "a red barn in a field"
            assert parsed["fields"]["Seed"] == str(7 + k) and parsed["fields"]["Steps"] == "2"
            assert parsed["fields"]["Sampler"] == "Euler a" and parsed["fields"]["Size"] == "64x64"
            assert parsed["fields"]["CFG scale"] == "5.0"
        assert infotext(text)["negative"] == "blurry"
    # the same request is a job on the queue, listed with the others
    jobs = jcall(sd_server, "GET", "/v1/jobs")[1]["jobs"]
    assert jobs[0]["command"] == "txt2img" and jobs[0]["state"] == "done"
    status, quiet = post(sd_server, "/sdapi/v1/txt2img", {"prompt": "x", "seed": 5, "steps": 1, "width": 64,
                                                           "height": 64, "send_images": False})
    assert status == 200 and quiet["images"] == [] and json.loads(quiet["info"])["all_seeds"] == [5]
    # png-info reads it back
    status, got = post(sd_server, "/sdapi/v1/png-info", {"image": body["images"][0]})
    assert status == 200 and got["info"] == info["infotexts"][0] and got["parameters"]["Seed"] == "7"


def test_img2img_with_a_mask_keeps_every_pixel_outside_it(sd_server):
    a = np.random.default_rng(1).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    m = np.zeros((80, 96), np.uint8)
    m[10:50, 20:70] = 255  # white: repaint
    status, body = post(sd_server, "/sdapi/v1/img2img", {
        "prompt": "grass", "seed": 3, "steps": 2, "width": 96, "height": 80, "denoising_strength": 0.9,
        "init_images": [b64png(a)], "mask": b64png(m)})
    assert status == 200, body
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"))
    assert out.shape == a.shape
    keep = m == 0
    assert np.array_equal(out[keep], a[keep])  # the object: pixel-identical
    assert (out[~keep] != a[~keep]).any()
    # inverted: the inside is kept instead
    status, body = post(sd_server, "/sdapi/v1/img2img", {
        "prompt": "grass", "seed": 3, "steps": 2, "width": 96, "height": 80, "inpainting_mask_invert": 1,
        "init_images": ["data:image/png;base64," + b64png(a)], "mask": b64png(m)})
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"))
    assert np.array_equal(out[~keep], a[~keep])


def test_models_samplers_progress_and_clear_errors(sd_server, tiny_sd):
    status, models = jcall(sd_server, "GET", "/sdapi/v1/sd-models")
    assert status == 200 and models[0]["title"] == tiny_sd.name
    assert "Euler a" in [s["name"] for s in jcall(sd_server, "GET", "/sdapi/v1/samplers")[1]]
    assert jcall(sd_server, "GET", "/sdapi/v1/options")[1]["sd_model_checkpoint"] == tiny_sd.name
    assert post(sd_server, "/sdapi/v1/options", {"sd_model_checkpoint": tiny_sd.name}) == (200, {})
    assert post(sd_server, "/sdapi/v1/options", {"sd_model_checkpoint": "other"})[0] == 422
    status, prog = jcall(sd_server, "GET", "/sdapi/v1/progress")
    assert status == 200 and set(prog) >= {"progress", "eta_relative", "state", "current_image", "textinfo"}
    status, body = post(sd_server, "/sdapi/v1/txt2img", {"prompt": "x", "sampler_name": "Nope"})
    assert status == 422 and body["option"] == "sampler_name" and "Euler a" in body["error"]
    status, body = post(sd_server, "/sdapi/v1/txt2img", {"prompt": "x", "steps": "many"})
    assert status == 422 and body["option"] == "steps"
    status, body = post(sd_server, "/sdapi/v1/txt2img",
                        {"prompt": "x", "override_settings": {"sd_model_checkpoint": "other.safetensors"}})
    assert status == 422 and tiny_sd.name in body["error"]
    status, body = post(sd_server, "/sdapi/v1/img2img", {"prompt": "x", "init_images": ["bm90IGFuIGltYWdl"]})
    assert status == 422 and "init" in body["error"]
    assert post(sd_server, "/sdapi/v1/txt2img", {"prompt": "x"}, token=None)[0] == 401


def test_interrupt_ends_the_running_request_with_what_is_done(sd_server):
    result = {}

    def run():
        result["answer"] = post(sd_server, "/sdapi/v1/txt2img", {
            "prompt": "a long one", "seed": 1, "steps": 2, "width": 64, "height": 64, "batch_size": 1, "n_iter": 60})

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 120
    while time.time() < deadline:
        prog = jcall(sd_server, "GET", "/sdapi/v1/progress")[1]
        if prog["progress"] > 0:
            break
        time.sleep(0.05)
    assert 0 < prog["progress"] < 1, prog
    assert post(sd_server, "/sdapi/v1/interrupt", {})[0] == 200
    t.join(120)
    status, body = result["answer"]
    assert status == 200
    info = json.loads(body["info"])
    assert info["interrupted"] and 1 <= len(body["images"]) < 60
    assert info["all_seeds"] == list(range(1, 1 + len(body["images"])))
