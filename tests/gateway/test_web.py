"""The web page at ``/``: served without a CDN, accessible markup, and, in headless Chromium against a
real gunicorn gateway and model server, the same top 5 and version as the API for the same image."""

from __future__ import annotations

import re

import pytest
import requests

from flask_server.web import STATIC_DIR
from tests.support.browser import ARTIFACTS_DIR, chromium_page
from tests.support.processes import REPO_ROOT

MODEL = "imageclassifier"  # conftest's tiny model with 1000 ImageNet classes
SCREENSHOT = ARTIFACTS_DIR / "web-page.png"


def test_page_and_assets_are_served(client):
    # Static files are streamed from an open file: close each response, as a WSGI server would.
    with client.get("/") as page:
        assert page.status_code == 200 and page.mimetype == "text/html"
        assets = re.findall(rb'(?:src|href)="(ui/[^"]+)"', page.data)
    for asset in assets:
        with client.get("/" + asset.decode()) as response:
            assert response.status_code == 200, asset


def test_nothing_is_loaded_from_another_origin():
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//|@import|fetch\(\"https?:", text), path.name


def test_every_form_control_has_a_label(client):
    with client.get("/") as page:
        html = page.get_data(as_text=True)
    controls = set(re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html))
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    assert controls and controls <= labelled
    assert 'role="alert"' in html and 'aria-live="polite"' in html


@pytest.fixture(scope="module")
def web_gateway(gateway_env):
    from tests.support.processes import start_gateway

    with start_gateway(gateway_env, wait_path="/readyz") as gateway:
        yield gateway


@pytest.mark.browser
def test_page_shows_the_same_top5_and_version_as_the_api(web_gateway, tmp_path):
    image = REPO_ROOT / "test_images" / "chelsea.jpg"
    api = requests.post(f"{web_gateway.url}/v1/models/{MODEL}/predict?top_k=5", data=image.read_bytes(),
                        headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert api.status_code == 200, api.text
    expected = api.json()
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")

    with chromium_page() as page:
        page.goto(web_gateway.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        page.select_option("#model", MODEL)
        page.set_input_files("#image", str(image))
        assert page.get_attribute("#preview", "alt") == "Preview of chelsea.jpg"
        page.click("#classify")
        page.wait_for_selector("#result:not([hidden])")

        labels = page.locator("#predictions .label").all_inner_texts()
        scores = [float(s) for s in page.locator("#predictions .score").evaluate_all(
            "nodes => nodes.map(n => n.dataset.score)")]
        assert labels == [p["label"] for p in expected["predictions"]]
        assert scores == pytest.approx([p["score"] for p in expected["predictions"]], rel=1e-6)
        assert page.inner_text("#result-version") == str(expected["model_version"])
        assert page.inner_text("#result-model") == MODEL
        assert page.is_hidden("#result-warning") == ("warning" not in expected)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # an error: the gateway's JSON error and status are shown, the old result is hidden
        page.set_input_files("#image", str(text_file))
        page.click("#classify")
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error-status").startswith("415")
        assert "unsupported Content-Type" in page.inner_text("#error-message")
        assert page.inner_text("#error-request-id") not in ("", "-")
        assert page.is_hidden("#result")


@pytest.mark.e2e
@pytest.mark.browser
def test_page_asks_for_a_key_when_keys_are_on_and_docs_render(gateway_env):
    from tests.support.processes import start_gateway

    env = {**gateway_env, "GATEWAY_API_KEYS": "browser-key"}
    with start_gateway(env, wait_path="/readyz") as gateway, chromium_page() as page:
        page.goto(gateway.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        assert page.is_visible("#api-key")
        assert page.inner_text("#error-status").startswith("401")  # the model list needed a key
        page.fill("#api-key", "browser-key")
        page.keyboard.press("Tab")  # change event: stored for this tab, models reloaded
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        assert page.is_hidden("#error")
        assert page.evaluate("sessionStorage.getItem('gateway.apiKey')") == "browser-key"
        assert page.evaluate("localStorage.length") == 0

        # the docs page renders every operation of the spec, and the key schemes
        spec = requests.get(gateway.url + "/openapi.json", timeout=10).json()
        page.goto(gateway.url + "/docs")
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator(".operation").count() == sum(len(item) for item in spec["paths"].values())
        assert page.is_visible("#auth") and "X-API-Key" in page.inner_text("#auth")



@pytest.mark.e2e
@pytest.mark.browser
def test_page_lists_every_model_and_asks_a_small_one_for_its_classes_only(model_server_factory, tmp_path):
    """Two models with no gateway configuration but their names: both are listed, and a 3-class
    model is asked for 3 labels (top_k=5 would be a 400), named by the labels inside its export."""
    from scripts.export_saved_model import export_keras_model
    from tests.gateway.conftest import write_model_config
    from tests.support.processes import start_gateway
    from tests.support.tiny_models import build_tiny_classifier

    colours = [("c0", "red"), ("c1", "green"), ("c2", "blue")]
    paths = {"Colours": tmp_path / "Colours", "Ten": tmp_path / "Ten"}
    export_keras_model(build_tiny_classifier((24, 24), 3, seed=7), paths["Colours"], 1, log=lambda _msg: None,
                       labels=colours)
    export_keras_model(build_tiny_classifier((28, 28), 10, seed=8), paths["Ten"], 1, log=lambda _msg: None)
    write_model_config(tmp_path / "models.config", paths)
    (tmp_path / "models.toml").write_text('[models.colours]\nmodel_name = "Colours"\n\n'
                                          '[models.ten]\nmodel_name = "Ten"\n')
    with model_server_factory(extra_args=[f"--model_config_file={tmp_path / 'models.config'}"],
                              wait_for="Colours") as server, \
            start_gateway({"MODEL_SERVER_URL": server.url, "MODELS_CONFIG": str(tmp_path / "models.toml")},
                          wait_path="/readyz") as gateway, chromium_page() as page:
        page.goto(gateway.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator("#model option").all_inner_texts() == ["colours (Colours, v1)", "ten (Ten, v1)"]
        page.select_option("#model", "colours")
        page.set_input_files("#image", str(REPO_ROOT / "test_images" / "chelsea.jpg"))
        page.click("#classify")
        page.wait_for_selector("#result:not([hidden])")
        assert sorted(page.locator("#predictions .label").all_inner_texts()) == ["blue", "green", "red"]
        assert page.is_hidden("#error")
