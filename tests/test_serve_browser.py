"""minicnn serve's page in headless Chromium, driven by Selenium (the `browser` extra; Debian's chromium and
chromium-driver): it loads with no console error, predicts drawn digits as the API does, shows test images
with their label and feature maps, and opens a map large with its filter. Screenshots are saved.

These tests are slow (a browser, a short training run). They skip, with the reason, only where Selenium,
Chromium or its driver is missing. The same file takes the README's screenshot:

    python3 tests/test_serve_browser.py CHECKPOINT docs/serve.png
"""

import json
import math
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import minicnn  # noqa: E402
from minicnn import data, models  # noqa: E402
from minicnn.serve import Inspector, make_server, serve_in_thread  # noqa: E402
from minicnn.training import Trainer  # noqa: E402

pytestmark = pytest.mark.slow
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1360, 1400)


def find_browser():
    """(browser binary, chromedriver) or a pytest skip naming what is missing."""
    pytest.importorskip("selenium", reason='Selenium is not installed: python3 -m pip install -e ".[browser]"')
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    driver = shutil.which("chromedriver") or next(
        (path for path in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(path)), None)
    if browser is None or driver is None:
        pytest.skip(f"no {'Chromium' if browser is None else 'chromedriver'} found: apt-get install chromium chromium-driver")
    return browser, driver


def open_browser(browser, driver_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver_path))


# ----- the page's helpers ----------------------------------------------------------------------------------

def wait_until_ready(driver):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def wait_for_answer(driver):
    """Wait until no prediction is in flight, pending or scheduled; return the page's last answer."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "const s = window.minicnn; return s.last !== null && !s.inFlight && !s.pending && s.timer === null;"))
    return driver.execute_script("return window.minicnn.last")


def stroke(driver, points, kind="mouse"):
    """One stroke through `points` (x, y on the 280x280 pad) with a mouse, pen or touch pointer."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    kinds = {"mouse": interaction.POINTER_MOUSE, "pen": interaction.POINTER_PEN, "touch": interaction.POINTER_TOUCH}
    builder = ActionBuilder(driver, mouse=PointerInput(kinds[kind], kind), duration=15)
    # move_to(element, x, y) is relative to the element's centre
    builder.pointer_action.move_to(pad, int(points[0][0] - 140), int(points[0][1] - 140)).pointer_down()
    for x, y in points[1:]:
        builder.pointer_action.move_to(pad, int(x - 140), int(y - 140))
    builder.pointer_action.pointer_up()
    builder.perform()


def one():
    return [(150 - 0.15 * (y - 50), y) for y in range(50, 240, 10)]


def zero():
    return [(140 + 55 * math.sin(2 * math.pi * t / 36), 140 - 85 * math.cos(2 * math.pi * t / 36)) for t in range(38)]


def seven():
    return [(70, 60), (130, 58), (190, 56), (215, 58), (195, 110), (170, 160), (150, 210), (140, 240)]


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def api_predict(url, body):
    request = urllib.request.Request(url + "api/predict", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def click(driver, element_id):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


# ----- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser_paths():
    return find_browser()


@pytest.fixture(scope="module")
def page(browser_paths):
    """A cnn trained for one epoch on 3000 MNIST images (enough to read clear digits), served on a free port."""
    minicnn.manual_seed(0)
    images, labels = data.load_mnist("train")
    model = models.cnn()
    Trainer(model, optimizer="adam").fit(images[:3000], labels[:3000], epochs=1, batch_size=32, verbose=False)
    test_images, test_labels = data.load_mnist("test")
    inspector = Inspector(model, dataset="mnist", name="cnn-3000.npz", test_images=(test_images[:500], test_labels[:500]))
    server = make_server(inspector, "127.0.0.1", 0)
    serve_in_thread(server)
    yield server.url
    server.shutdown()
    server.server_close()


@pytest.fixture
def driver(browser_paths, page):
    opened = open_browser(*browser_paths)
    opened.get(page)
    wait_until_ready(opened)
    yield opened
    opened.quit()


@pytest.fixture
def screenshots(tmp_path):
    """Where screenshots go: $MINICNN_SCREENSHOTS when set (CI keeps them), else the test's tmp folder."""
    folder = Path(os.environ.get("MINICNN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ----- the tests --------------------------------------------------------------------------------------------

def test_the_page_loads_with_its_summary_and_no_console_error(driver):
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#summary-table tbody tr")
    assert len(rows) == 1 + len(models.cnn().layers) + 1  # input, the layers, total
    assert "93,322" in driver.find_element(By.ID, "model-name").text
    options = driver.execute_script("return [...document.getElementById('cam-layer').options].map(o => o.value)")
    assert options[-1] == "7 ReLU" and driver.execute_script("return document.getElementById('cam-layer').value") == "7 ReLU"
    assert console_errors(driver) == []


def test_drawn_digits_are_predicted_as_the_api_predicts_them(driver, page, screenshots):
    from selenium.webdriver.common.by import By

    for name, points, kind in (("1", one(), "mouse"), ("0", zero(), "pen")):
        click(driver, "clear")
        stroke(driver, points, kind)
        answer = wait_for_answer(driver)
        shown = driver.find_element(By.ID, "prediction").get_attribute("data-predicted")
        assert shown == answer["class"] == name, (name, answer["probabilities"])
        # The page showed what the API gives for the input the page displayed.
        again = api_predict(page, {"pixels": answer["input"], "activations": False, "saliency": False})
        np.testing.assert_allclose(again["probabilities"], answer["probabilities"], atol=2e-3)
        assert np.asarray(answer["input"]).max() > 0.9  # the drawing reached the model's input
        driver.save_screenshot(str(screenshots / f"serve-drawn-{name}.png"))
    # A touch stroke, then Undo: back to the "0" alone.
    stroke(driver, [(40, 40), (60, 60)], "touch")
    assert driver.execute_script("return window.minicnn.strokes.length") == 2
    click(driver, "undo")
    assert wait_for_answer(driver)["class"] == "0"
    assert driver.execute_script("return window.minicnn.strokes.length") == 1
    assert console_errors(driver) == []


def test_a_test_image_shows_its_label_feature_maps_and_a_map_with_its_filter(driver, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    click(driver, "random")
    answer = wait_for_answer(driver)
    truth = driver.find_element(By.ID, "truth")
    assert "true label" in truth.text and truth.get_attribute("data-label") in answer["classes"]
    grids = driver.find_elements(By.CSS_SELECTOR, "#layers canvas.maps")
    assert len(grids) == sum(layer["kind"] == "maps" for layer in answer["layers"]) == 8
    assert len(driver.find_elements(By.CSS_SELECTOR, "#layers .layer")) == len(answer["layers"])
    # Click the first map of the second convolution: it opens large, with its 32-channel filter.
    grid = grids[3]
    driver.execute_script("arguments[0].scrollIntoView()", grid)
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element_with_offset(grid, -grid.size["width"] // 2 + 5,
                                                     -grid.size["height"] // 2 + 5).click().perform()
    WebDriverWait(driver, 10).until(lambda d: "filter 0 of 3 Conv2D" in d.find_element(By.ID, "zoom-filter-note").text)
    assert driver.find_element(By.ID, "zoom-title").text == "3 Conv2D, channel 0"
    assert "32 input channels" in driver.find_element(By.ID, "zoom-filter-note").text
    driver.save_screenshot(str(screenshots / "serve-zoom.png"))
    click(driver, "zoom-close")
    click(driver, "wrong")
    WebDriverWait(driver, 30).until(lambda d: "the model says" in d.find_element(By.ID, "truth").text)
    driver.execute_script("window.scrollTo(0, 0)")
    path = screenshots / "serve-test-image.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 20_000
    assert console_errors(driver) == []


def test_a_model_for_other_inputs_gets_a_clear_message_on_the_page(browser_paths):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    colour = minicnn.nn.Sequential(minicnn.nn.Conv2D(3, 2, 3), minicnn.nn.Flatten(), minicnn.nn.Dense(2 * 30 * 30, 10),
                                   input_shape=(3, 32, 32))
    server = make_server(Inspector(colour, name="cifar.npz"), "127.0.0.1", 0)
    serve_in_thread(server)
    driver = open_browser(*browser_paths)
    try:
        driver.get(server.url)
        message = driver.find_element(By.ID, "message")
        WebDriverWait(driver, 20).until(lambda d: message.is_displayed())
        assert "3x32x32" in message.text and "1x28x28" in message.text
        assert not driver.find_element(By.ID, "random").is_enabled()
        assert console_errors(driver) == []
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


# ----- the README's screenshot -------------------------------------------------------------------------------

def take_screenshot(checkpoint, out):
    """Serve `checkpoint`, draw a 7 on the page and save a screenshot of the page's top to `out`."""
    browser, driver_path = find_browser()
    server = make_server(Inspector.open(checkpoint), "127.0.0.1", 0)
    serve_in_thread(server)
    driver = open_browser(browser, driver_path)
    try:
        driver.get(server.url)
        wait_until_ready(driver)
        stroke(driver, seven())
        wait_for_answer(driver)
        driver.execute_script("document.getElementById('cam-layer').value = '4 ReLU';"
                              "document.getElementById('cam-layer').dispatchEvent(new Event('change'))")
        wait_for_answer(driver)
        driver.save_screenshot(str(out))
        errors = console_errors(driver)
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    return errors


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python3 tests/test_serve_browser.py CHECKPOINT OUT.png")
    problems = take_screenshot(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}" + (f"; console errors: {problems}" if problems else ""))
