"""The demo in a real browser: headless Chromium drives the page that
``python -m hf_shapley.demo --model <dir>`` serves, and every value the page shows is compared
with an independent ``image-shapley-explanation`` pipeline on the same file.

Needs Chromium and chromedriver (``apt-get install -y chromium chromium-driver``; ``.ci/run``
installs them) and selenium (the ``test`` extra). Without them the test FAILS with the reason;
set ``HF_SHAPLEY_SKIP_BROWSER=1`` to skip it locally on purpose.

Screenshots go to ``tests/artifacts/`` (gitignored; ``HF_SHAPLEY_ARTIFACTS`` moves them), with
``browser_timings.json``: seconds from upload to heatmap as the browser saw them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import ViTImageProcessorPil, pipeline

from hf_shapley.data import generate_shapes, shapes_label_names
from hf_shapley.demo.app import ELEMENT_IDS
from hf_shapley.demo.examples import write_examples

pytestmark = pytest.mark.usefixtures("single_thread")

CHROMIUM = os.environ.get("HF_SHAPLEY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HF_SHAPLEY_CHROMEDRIVER", "/usr/bin/chromedriver")
SKIP_VARIABLE = "HF_SHAPLEY_SKIP_BROWSER"
ARTIFACTS = Path(
    os.environ.get("HF_SHAPLEY_ARTIFACTS", Path(__file__).resolve().parent / "artifacts")
)
SRC = Path(__file__).resolve().parents[1] / "src"
# Headless, and nothing that reaches for the (closed) network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1500",
)
TIMEOUT = 90  # seconds for the server to start and for one explanation to show (shared CPU)
METRICS = {"accuracy": 0.8, "faithfulness": {"pearson_r": 0.9, "pooled_relative_error": 0.4}}


def require_browser() -> None:
    """Fail (or, with HF_SHAPLEY_SKIP_BROWSER=1, skip) unless the browser parts are there."""
    problems = []
    try:
        import selenium  # noqa: F401
    except ImportError as error:
        problems.append(f"selenium is not installed ({error}); pip install -e '.[dev]'")
    for name, path in (("Chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            problems.append(f"{name} not found at {path}")
    if not problems:
        return
    reason = (
        "The browser test cannot run: "
        + "; ".join(problems)
        + ". Install them with `apt-get install -y chromium chromium-driver` (.ci/run does), "
        f"or set {SKIP_VARIABLE}=1 to skip this test on purpose."
    )
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(reason)
    pytest.fail(reason, pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def model_dir(workdir, make_model) -> Path:
    """A tiny model with the built-in data set's labels (so the page offers examples)."""
    model = make_model("vit", players_grid=(2, 4))
    names = shapes_label_names(model.config.num_labels)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    path = workdir / "model"
    model.save_pretrained(path)
    (path / "metrics.json").write_text(json.dumps(METRICS))
    return path


@pytest.fixture(scope="module")
def reference(model_dir):
    return pipeline("image-shapley-explanation", model=str(model_dir))


@pytest.fixture(scope="module")
def server(model_dir, workdir):
    """``python -m hf_shapley.demo`` on 127.0.0.1 and a free port; yields the page's URL."""
    require_browser()
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(workdir / "gradio"),
        HF_HUB_OFFLINE="1",
    )
    log = open(workdir / "server.log", "w")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        [sys.executable, "-m", "hf_shapley.demo", "--model", str(model_dir)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"The demo exited ({process.returncode}):\n{server_log(workdir)}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"The demo did not start in {TIMEOUT} s:\n{server_log(workdir)}")
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def server_log(workdir: Path) -> str:
    return (workdir / "server.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def browser(server, workdir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path below: no Selenium Manager
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={workdir / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        driver.get(server)
        # The page is drawn by JavaScript after the load event: wait for its components.
        wait_for(driver, lambda d: by_id(d, "upload") and by_id(d, "status"), "the page")
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def timings():
    record: dict[str, float] = {}
    yield record
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "browser_timings.json").write_text(json.dumps(record, indent=2))


# ---------------------------------------------------------------------- page helpers
def by_id(driver, key: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, ELEMENT_IDS[key])


def wait_for(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, TIMEOUT, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        found = driver.find_elements(By.ID, ELEMENT_IDS["status"])
        status = found[0].text if found else "(no status box on the page)"
        pytest.fail(f"Timed out waiting for {what}; the status box says: {status!r}")


def upload(driver, path: str) -> None:
    """Put a file into the upload component (clearing the previous one first)."""
    from selenium.webdriver.common.by import By

    component = by_id(driver, "upload")
    inputs = component.find_elements(By.CSS_SELECTOR, "input[type=file]")
    if not inputs:
        component.find_element(By.CSS_SELECTOR, "button[aria-label=Clear]").click()
        inputs = wait_for(
            driver,
            lambda d: component.find_elements(By.CSS_SELECTOR, "input[type=file]"),
            "the upload box to be empty again",
        )
    inputs[0].send_keys(path)


def heatmap_src(driver) -> str | None:
    return driver.execute_script(
        "const i = document.querySelector(arguments[0]);"
        "return i && i.complete && i.naturalWidth > 0 ? i.src : null;",
        f"#{ELEMENT_IDS['heatmap']} img",
    )


def heatmap_natural_size(driver) -> tuple[int, int]:
    return tuple(
        driver.execute_script(
            "const i = document.querySelector(arguments[0]);"
            "return [i.naturalWidth, i.naturalHeight];",
            f"#{ELEMENT_IDS['heatmap']} img",
        )
    )


def download(src: str) -> np.ndarray:
    with urllib.request.urlopen(src, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def shown_top_label(driver) -> str:
    from selenium.webdriver.common.by import By

    heading = by_id(driver, "label").find_elements(
        By.CSS_SELECTOR, "[data-testid=label-output-value]"
    )
    return heading[0].text.strip() if heading else ""


def explain_in_page(driver, path: str, timings: dict, key: str) -> str:
    """Upload a valid image and wait for its heatmap; returns the heatmap's URL."""
    name = os.path.basename(path)
    previous = heatmap_src(driver)
    start = time.perf_counter()
    upload(driver, path)
    wait_for(
        driver,
        lambda d: (
            f"Explained {name}" in by_id(d, "status").text
            and (src := heatmap_src(d)) is not None
            and src != previous
        ),
        f"the explanation of {name}",
    )
    timings[key] = round(time.perf_counter() - start, 3)
    return heatmap_src(driver)


def screenshot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


# ---------------------------------------------------------------------- the tests
def test_upload_explain_bad_file_and_recover(browser, reference, model_dir, workdir, timings):
    start = time.perf_counter()
    config = reference.model.config
    example = write_examples(workdir / "examples", config, reference.image_processor)[0]

    # 1. An image of the built-in data set: the label shown is the pipeline's top label and the
    #    heatmap is served at the input's size, pixel for pixel the pipeline's.
    src = explain_in_page(browser, example, timings, "upload_to_heatmap_first_s")
    expected = reference(example, top_k=1)[0]
    assert shown_top_label(browser) == expected["label"]
    assert heatmap_natural_size(browser) == Image.open(example).size
    assert np.array_equal(download(src), np.asarray(expected["heatmap"]))
    assert expected["label"] in by_id(browser, "efficiency").text
    assert "0.900" in by_id(browser, "metrics").text  # metrics.json beside the model
    assert "Not faithful enough" in by_id(browser, "metrics").text  # error 0.4 > 0.25
    screenshot(browser, "browser_01_explained.png")

    # 2. A corrupt file: the message shows, the page does not break.
    corrupt = workdir / "broken.png"
    data = Path(example).read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    upload(browser, str(corrupt))
    wait_for(
        browser,
        lambda d: "could not be explained" in by_id(d, "status").text,
        "the error message",
    )
    message = by_id(browser, "status").text
    assert "broken.png" in message and "corrupt" in message
    screenshot(browser, "browser_02_corrupt_file.png")

    # 3. The app still serves: a further, non-square image of the built-in data set.
    arrays = generate_shapes(1, image_size=48, num_classes=config.num_labels, seed=5)
    further = str(workdir / "further_48x40.png")
    Image.fromarray(arrays.images[0]).crop((0, 0, 48, 40)).save(further)
    src = explain_in_page(browser, further, timings, "upload_to_heatmap_after_error_s")
    expected = reference(further, top_k=1)[0]
    assert shown_top_label(browser) == expected["label"]
    assert heatmap_natural_size(browser) == (48, 40)
    assert np.array_equal(download(src), np.asarray(expected["heatmap"]))
    screenshot(browser, "browser_03_recovered.png")
    timings["flow_s"] = round(time.perf_counter() - start, 3)


def test_choosing_another_class_shows_its_explanation(browser, reference, workdir, timings):
    from selenium.webdriver.common.by import By

    further = str(workdir / "further_48x40.png")  # still on the page from the test above
    ranking = reference(further, top_k=reference.model.config.num_labels)
    other = ranking[-1]["label"]  # the least probable class: not among the top ones
    previous = heatmap_src(browser)
    start = time.perf_counter()
    by_id(browser, "chooser").find_element(By.CSS_SELECTOR, "input").click()
    option = wait_for(
        browser,
        lambda d: d.find_elements(
            By.CSS_SELECTOR, f'li[data-testid=dropdown-option][aria-label="{other}"]'
        ),
        f"the option {other!r}",
    )
    option[0].click()
    wait_for(
        browser,
        lambda d: (
            other in by_id(d, "efficiency").text
            and (src := heatmap_src(d)) is not None
            and src != previous
        ),
        f"the explanation of {other!r}",
    )
    timings["class_switch_s"] = round(time.perf_counter() - start, 3)
    expected = reference(further, targets=other)[0]
    assert np.array_equal(download(heatmap_src(browser)), np.asarray(expected["heatmap"]))
    assert f"{expected['efficiency_residual']:.2e}" in by_id(browser, "efficiency").text
    # The page's values table holds the pipeline's grid for that class.
    h, w = np.shape(expected["attributions"])
    shown = np.full((h, w), np.nan)
    decimals = None
    for cell in by_id(browser, "table").find_elements(By.CSS_SELECTOR, "[role=gridcell]"):
        row, col = int(cell.get_attribute("data-row")), int(cell.get_attribute("data-col"))
        if col >= 1:  # column 0 names the row
            shown[row, col - 1] = float(cell.text)
            decimals = len(cell.text.split(".")[1])
    assert not np.isnan(shown).any(), shown
    assert np.abs(shown - np.asarray(expected["attributions"])).max() <= 0.5 * 10.0**-decimals
    screenshot(browser, "browser_04_other_class.png")


def test_picking_an_example_explains_it(browser, reference, workdir):
    from selenium.webdriver.common.by import By

    # The server wrote the same built-in test images (same seed and size) as write_examples here.
    examples = write_examples(
        workdir / "examples", reference.model.config, reference.image_processor
    )
    path = examples[-1]
    name = os.path.basename(path)
    buttons = [
        b for b in browser.find_elements(By.CSS_SELECTOR, "button.gallery-item") if b.text == name
    ]
    assert buttons, f"no example button {name!r} on the page"
    previous = heatmap_src(browser)
    buttons[0].click()
    wait_for(
        browser,
        lambda d: (
            f"Explained {name}" in by_id(d, "status").text
            and heatmap_src(d) not in (None, previous)
        ),
        f"the explanation of the example {name}",
    )
    expected = reference(path, top_k=1)[0]
    assert shown_top_label(browser) == expected["label"]
    assert np.array_equal(download(heatmap_src(browser)), np.asarray(expected["heatmap"]))


def test_artifacts_directory_is_ignored_by_git():
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(
        ["git", "check-ignore", "-q", str(ARTIFACTS / "browser_01_explained.png")],
        cwd=root,
        capture_output=True,
    )
    assert proc.returncode == 0 or not str(ARTIFACTS).startswith(str(root))
