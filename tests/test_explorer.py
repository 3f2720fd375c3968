"""The latent explorer: its HTTP endpoints called directly (decoded images equal the model's
E[x|z], example encodings equal posterior means, bad requests get 400 with a message), and in a
real browser moving a slider or clicking the map changes the decoded image."""

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from vaekit.config import ModelConfig, RunConfig, merge
from vaekit.errors import ConfigError
from vaekit.view.explorer import Explorer, LatentSpace
from vaekit.families import build_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = merge(RunConfig(), {"train": {"epochs": 2, "batch_size": 128, "report": False},
                              "model": {"hidden": (32,), "latent_dim": 3, "likelihood": "bernoulli"}})
    return vaekit.train(cfg, tmp_path_factory.mktemp("explorer") / "run", progress=False,
                        log=lambda m: None)


@pytest.fixture(scope="module")
def explorer(run):
    with Explorer(run, port=0) as server:  # loopback, any free port
        yield server


def get(explorer, path):
    try:
        with urllib.request.urlopen(explorer.url.rstrip("/") + path, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read()


def post(explorer, path, body: bytes):
    request = urllib.request.Request(explorer.url.rstrip("/") + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def decode_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "PNG"
    return np.asarray(image)


def test_listens_on_loopback_only_by_default(explorer):
    assert explorer.server.server_address[0] == "127.0.0.1"
    assert explorer.url.startswith("http://127.0.0.1:")


def test_page_and_its_assets_are_served_locally(explorer):
    status, kind, body = get(explorer, "/")
    assert status == 200 and kind.startswith("text/html")
    assert b'src="explorer.js"' in body and b'href="explorer.css"' in body
    for path, kind_prefix in (("/explorer.js", "text/javascript"), ("/explorer.css", "text/css")):
        status, kind, asset = get(explorer, path)
        assert status == 200 and kind.startswith(kind_prefix) and len(asset) > 500
        assert b"http://" not in asset and b"https://" not in asset  # nothing from outside
    assert get(explorer, "/../pyproject.toml")[0] == 404
    assert get(explorer, "/static/report.html")[0] == 404  # only the listed files


def test_info_orders_dimensions_by_kl_and_maps_the_test_set(explorer, run):
    status, _, body = get(explorer, "/api/info")
    info = json.loads(body)
    assert status == 200 and info["latent_dim"] == 3 and info["data_shape"] == [1, 8, 8]
    kl = info["kl_per_dim"]
    assert info["order"] == sorted(range(3), key=lambda j: -kl[j])
    results = json.loads((run / "results.json").read_text())
    assert sum(kl) == pytest.approx(results["kl"], rel=1e-4)  # closed-form KL of the test set
    assert len(info["map"]["points"]) == len(info["map"]["labels"]) == info["num_examples"] == 180
    assert info["map"]["name"].startswith("PCA") and info["limit"] >= 3


def test_decode_returns_the_models_mean_as_png(explorer, run):
    model = vaekit.load(run).model
    z = [0.5, -1.0, 2.0]
    status, body = post(explorer, "/api/decode", json.dumps({"z": z}).encode())
    assert status == 200
    pixels = decode_uri(body["image"])
    mean = model.decode(torch.tensor([z])).mean[0, 0].detach().numpy()  # [8, 8] in [0, 1]
    assert pixels.shape == (8, 8)
    np.testing.assert_array_equal(pixels, (mean.clip(0, 1) * 255 + 0.5).astype(np.uint8))


def test_example_starts_from_its_posterior_mean(explorer, run):
    loaded = vaekit.load(run)
    model = loaded.model
    x, labels = loaded.split()
    status, _, body = get(explorer, "/api/example?index=7")
    example = json.loads(body)
    assert status == 200 and example["label"] == int(labels[7])
    torch.testing.assert_close(torch.tensor(example["z"]), model.encode(x[7:8]).mean[0])
    np.testing.assert_array_equal(decode_uri(example["image"]),
                                  (x[7, 0].numpy() * 255 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("body,message", [
    (b'{"z": [1, 2]}', "3 finite numbers"),
    (b'{"z": [1, 2, NaN]}', "3 finite numbers"),
    (b'{"z": [1, true, 2]}', "3 finite numbers"),
    (b"not json", "must be JSON"),
])
def test_bad_decode_requests_get_400_with_a_message(explorer, body, message):
    status, answer = post(explorer, "/api/decode", body)
    assert status == 400 and message in answer["error"]


def test_bad_example_requests_get_400(explorer):
    for query in ("?index=180", "?index=-1", "?index=x", ""):
        status, _, body = get(explorer, "/api/example" + query)
        assert status == 400 and "error" in json.loads(body)
    assert post(explorer, "/api/nothing", b"{}")[0] == 404


def test_a_busy_port_is_a_config_error(run, explorer):
    port = explorer.server.server_address[1]
    with pytest.raises(ConfigError, match="another --port"):
        Explorer(run, port=port)


def test_tabular_models_answer_with_values():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(8,), latent_dim=2, likelihood="gaussian"), (5,)).eval()
    space = LatentSpace(model, torch.randn(20, 5), None)
    assert not space.info()["is_image"] and space.info()["map"]["labels"] is None
    values = space.decode({"z": [0.25, -0.5]})["values"]
    np.testing.assert_allclose(values, model.decode(torch.tensor([[0.25, -0.5]])).mean[0].detach(),
                               atol=1e-5)


@pytest.mark.browser
def test_moving_a_slider_and_clicking_the_map_change_the_image(explorer, tmp_path):
    from browser import browser_page

    errors = []
    with browser_page(errors) as page:
        page.goto(explorer.url)
        decoded = page.locator("#decoded")
        page.wait_for_function("document.getElementById('decoded').src.startsWith('data:image/png')")
        page.screenshot(path=str(tmp_path / "explorer-start.png"))
        first = decoded.get_attribute("src")
        top_dim = json.loads(get(explorer, "/api/info")[2])["order"][0]
        page.fill(f"#z{top_dim}", "-2.5")  # a range input: fill() sets it and fires input
        page.wait_for_function(
            "(before) => document.getElementById('decoded').src !== before", arg=first)
        after_slider = decoded.get_attribute("src")
        assert page.locator(f"#z{top_dim}-value").text_content().strip() == "-2.50"
        page.screenshot(path=str(tmp_path / "explorer-slider.png"))
        box = page.locator("#map").bounding_box()
        page.mouse.click(box["x"] + 0.9 * box["width"], box["y"] + 0.1 * box["height"])
        page.wait_for_function(
            "(before) => document.getElementById('decoded').src !== before", arg=after_slider)
        page.screenshot(path=str(tmp_path / "explorer-map.png"))
        assert not page.locator("#error").is_visible()
    assert errors == []
    assert first != after_slider
    for name in ("explorer-start.png", "explorer-slider.png", "explorer-map.png"):
        assert (tmp_path / name).stat().st_size > 5_000
