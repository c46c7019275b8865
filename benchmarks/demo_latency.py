"""Latency of the demo page: from the upload (the "click") to the heatmap, and class switches.

Two measurements on the same built-in test images (written at the model's input size):

(a) In process, per image: the model's forward pass alone on the processed image; the
    pipeline for the top class (``top_k=1``, with its heatmap); and the demo's upload callback
    (``ShapleyDemo.on_upload``: file read, one pipeline pass for *every* class with all
    heatmaps, the page's table and text), as ratios to the forward pass; then a class switch
    (``on_class``: no model pass).
(b) In a real browser (headless Chromium through selenium, as ``tests/test_demo_browser.py``):
    ``python -m hf_shapley.demo`` serving the model; per image, the time from handing the file
    to the upload box until the new heatmap has loaded in the page, and the time from choosing
    another class until its heatmap has loaded. Medians over the images.

    python benchmarks/demo_latency.py --model outputs/shapley-vit-shapes \\
        --threads 1 --out benchmarks/results/demo_latency_cpu_1thread.md --screenshot docs/demo.png

A report of latencies and ratios, not a timed test. The CPU may be shared: the load average
is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, report  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
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
    "--window-size=1400,1400",
)
TIMEOUT = 120


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="outputs/shapley-vit-shapes")
    parser.add_argument("--num_images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="In-process repeats per image.")
    parser.add_argument("--no_browser", action="store_true", help="Skip measurement (b).")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)."
    )
    parser.add_argument("--out", type=Path, default=None, help="Write the report here (.md).")
    parser.add_argument(
        "--screenshot", type=Path, default=None, help="Save the page, first image explained."
    )
    return parser.parse_args()


def median_ms(values: list[float]) -> float:
    return round(1000.0 * statistics.median(values), 2)


# ------------------------------------------------------------------------------ (a)
def in_process(demo, images: list[str], rounds: int) -> dict[str, list[float]]:
    pipe = demo.explainer.pipeline
    model = pipe.model
    times: dict[str, list[float]] = {"forward": [], "pipeline_top1": [], "upload": [], "switch": []}
    demo.on_upload(images[0])  # warm-up
    for path in images:
        rgb, _ = demo.explainer.load_image(path)
        pixel_values = pipe.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        for _ in range(rounds):
            start = time.perf_counter()
            with torch.no_grad():
                model(pixel_values=pixel_values)
            times["forward"].append(time.perf_counter() - start)
            start = time.perf_counter()
            pipe(path, top_k=1)
            times["pipeline_top1"].append(time.perf_counter() - start)
            start = time.perf_counter()
            out = demo.on_upload(path)
            times["upload"].append(time.perf_counter() - start)
            other = out.explanation.ranking[-1]
            label = out.explanation.entries[other]["label"]
            start = time.perf_counter()
            demo.on_class(label, out.explanation)
            times["switch"].append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------------------ (b)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, workdir: Path, threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(workdir / "gradio"),
        HF_HUB_OFFLINE="1",
    )
    log = open(workdir / "server.log", "w")  # noqa: SIM115 (lives as long as the server)
    command = [sys.executable, "-m", "hf_shapley.demo", "--model", model, "--port", str(port)]
    if threads:
        command += ["--threads", str(threads)]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + TIMEOUT
    while True:
        if process.poll() is not None:
            raise SystemExit((workdir / "server.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=2):
                return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.terminate()
                raise SystemExit("The demo did not start.") from None
            time.sleep(0.3)


def measure_one(
    driver, wait, path: str, status, heatmap_src, on_explained=None
) -> tuple[float, float]:
    """Seconds from the file to its heatmap, then from a class choice to that heatmap."""
    from selenium.webdriver.common.by import By

    from hf_shapley.demo.app import ELEMENT_IDS

    component = driver.find_element(By.ID, ELEMENT_IDS["upload"])
    if not component.find_elements(By.CSS_SELECTOR, "input[type=file]"):
        component.find_element(By.CSS_SELECTOR, "button[aria-label=Clear]").click()
        wait.until(lambda d: component.find_elements(By.CSS_SELECTOR, "input[type=file]"))
    previous = heatmap_src()
    name = os.path.basename(path)
    field = component.find_element(By.CSS_SELECTOR, "input[type=file]")
    start = time.perf_counter()
    field.send_keys(path)
    wait.until(lambda d: f"Explained {name}" in status() and heatmap_src() not in (None, previous))
    upload_s = time.perf_counter() - start
    if on_explained is not None:
        on_explained()
    # A class switch: the least probable class in the page's list other than the top one.
    previous = heatmap_src()
    driver.find_element(By.ID, ELEMENT_IDS["chooser"]).find_element(
        By.CSS_SELECTOR, "input"
    ).click()
    shown = wait.until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "li[data-testid=dropdown-option]")
    )
    top = driver.find_element(By.CSS_SELECTOR, "[data-testid=label-output-value]").text
    other = next(li for li in reversed(shown) if li.get_attribute("aria-label") != top)
    start = time.perf_counter()
    other.click()
    wait.until(lambda d: heatmap_src() not in (None, previous))
    return upload_s, time.perf_counter() - start


def in_browser(
    model: str, images: list[str], screenshot: Path | None, threads: int | None
) -> dict[str, list[float]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from hf_shapley.demo.app import ELEMENT_IDS

    workdir = Path(tempfile.mkdtemp(prefix="hf-shapley-demo-latency-"))
    process, url = start_server(model, workdir, threads)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={workdir / 'profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    wait = WebDriverWait(driver, TIMEOUT, poll_frequency=0.02)
    heatmap_js = (
        "const i = document.querySelector(arguments[0]);"
        "return i && i.complete && i.naturalWidth > 0 ? i.src : null;"
    )
    heatmap_selector = f"#{ELEMENT_IDS['heatmap']} img"

    def heatmap_src():
        return driver.execute_script(heatmap_js, heatmap_selector)

    def status() -> str:
        return driver.find_element(By.ID, ELEMENT_IDS["status"]).text

    times: dict[str, list[float]] = {"upload": [], "switch": []}
    try:
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.ID, ELEMENT_IDS["upload"]))
        for i, path in enumerate(images):
            shoot = None
            if i == 0 and screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                shoot = lambda: driver.save_screenshot(str(screenshot))  # noqa: E731
            upload_s, switch_s = measure_one(driver, wait, path, status, heatmap_src, shoot)
            if i > 0:  # the first image warms up the server and the page
                times["upload"].append(upload_s)
                times["switch"].append(switch_s)
    finally:
        driver.quit()
        process.terminate()
        process.wait(timeout=30)
    return times


def main() -> None:
    args = parse_args()
    import hf_shapley  # noqa: F401  (registers the pipeline)
    from hf_shapley.demo import ShapleyDemo
    from hf_shapley.demo.examples import model_image_size, write_examples

    demo = ShapleyDemo(args.model, examples=[])
    config = demo.explainer.config
    image_dir = Path(tempfile.mkdtemp(prefix="hf-shapley-demo-images-"))
    images = write_examples(
        image_dir, config, demo.explainer.image_processor, num_examples=args.num_images + 1
    )
    if not images:
        raise SystemExit("The model was not trained on the built-in data set: no test images.")
    if args.threads:
        torch.set_num_threads(args.threads)
    side = model_image_size(config, demo.explainer.image_processor)
    threads = torch.get_num_threads()
    a = in_process(demo, images[1:], args.rounds)
    forward = statistics.median(a["forward"])
    rows = [
        [name, median_ms(a[key]), f"{statistics.median(a[key]) / forward:.3g}"]
        for name, key in (
            ("model forward pass alone", "forward"),
            ("pipeline, top class with its heatmap", "pipeline_top1"),
            ("demo upload callback: every class, all heatmaps, table", "upload"),
            ("demo class switch (no model pass)", "switch"),
        )
    ]
    text = (
        f"Model `{args.model}`: {config.num_labels} classes, players "
        f"{tuple(config.players_grid)}, input {side} x {side} px; {len(images) - 1} built-in test images "
        f"({image_size_text(images[1])} px); CPU with {os.cpu_count()} cores, torch "
        f"{threads} thread(s) (server too); load average {os.getloadavg()[0]:.2f} (the CPU is shared).\n\n"
        f"(a) In process, median of {args.rounds} rounds per image over the images:\n\n"
        + markdown_table(["step", "median ms", "/ forward pass"], rows)
    )
    results = {"in_process_ms": {k: median_ms(v) for k, v in a.items()}}
    if not args.no_browser:
        b = in_browser(args.model, images, args.screenshot, args.threads)
        results["browser_ms"] = {k: median_ms(v) for k, v in b.items()}
        results["browser_samples_ms"] = {k: [round(1000 * x, 1) for x in v] for k, v in b.items()}
        text += (
            f"\n\n(b) In headless Chromium, `python -m hf_shapley.demo` (server and browser on "
            f"the same CPU), median over {len(b['upload'])} images after one warm-up image:\n\n"
            + markdown_table(
                ["step", "median ms", "min ms", "max ms"],
                [
                    [
                        "upload to heatmap loaded in the page",
                        median_ms(b["upload"]),
                        round(1000 * min(b["upload"]), 1),
                        round(1000 * max(b["upload"]), 1),
                    ],
                    [
                        "class switch to its heatmap loaded",
                        median_ms(b["switch"]),
                        round(1000 * min(b["switch"]), 1),
                        round(1000 * max(b["switch"]), 1),
                    ],
                ],
            )
        )
    text += "\n\n```json\n" + json.dumps(results, indent=2) + "\n```\n"
    report(text, args.out)


def image_size_text(path: str) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return f"{image.width} x {image.height}"


if __name__ == "__main__":
    main()
