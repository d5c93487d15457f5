"""The page at ``/`` in a real browser: headless Debian Chromium driven by Playwright
(Python package, its bundled driver; the browser is /usr/bin/chromium, nothing downloaded).

Starts the real service (uvicorn on 127.0.0.1, an ephemeral port, a tiny trained model),
submits the paper's preloaded MELD example, checks the table against
``Recognizer.predict`` on the same text, and saves screenshots at 1280x800 and 390x844
under ``tests/artifacts/`` (or ``$IEIN_TEST_ARTIFACTS``).  Skips when Chromium or the
Python packages are missing.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from iein.data.examples import TABLE5_EXAMPLE
import torch

CHROMIUM = Path(os.environ.get("IEIN_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'iein[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'iein[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")

from iein.recognizer import Recognizer  # noqa: E402
from iein.server import Limits, create_app  # noqa: E402

torch.set_num_threads(1)

ARTIFACTS = Path(os.environ.get("IEIN_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
VIEWPORTS = [(1280, 800), (390, 844)]
#: The paper's Table 5 example, as preloaded in the page.
EXAMPLE = list(TABLE5_EXAMPLE)
_READ_TABLE = """() => [...document.querySelectorAll('#results tbody tr')].map(tr => ({
    speaker: tr.querySelector('td.speaker').textContent,
    text: tr.querySelector('td.text').textContent,
    steps: [...tr.querySelectorAll('td.step .emo')].map(e => e.textContent),
    changed: [...tr.querySelectorAll('td.step.changed')].map(td => Number(td.dataset.step)),
    final: tr.querySelector('td.final').dataset.label,
    prob: tr.querySelector('td.final .prob').textContent,
}))"""


@pytest.fixture(scope="module")
def recognizer(tiny_meld_checkpoint: Path) -> Recognizer:
    return Recognizer.load(tiny_meld_checkpoint)


@pytest.fixture(scope="module")
def base_url(recognizer: Recognizer):
    yield from _serve(recognizer)


@pytest.fixture(scope="module")
def live_recognizer(tiny_meld_live_checkpoint: Path) -> Recognizer:
    return Recognizer.load(tiny_meld_live_checkpoint)


@pytest.fixture(scope="module")
def live_url(live_recognizer: Recognizer):
    yield from _serve(live_recognizer)


def _serve(recognizer: Recognizer):
    """The real service (uvicorn in a thread, an ephemeral port) around ``recognizer``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # a lower character limit than the default, for the error-display test
    config = uvicorn.Config(create_app(recognizer, Limits(max_utterance_chars=5000)), log_level="warning",
                            access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        yield b
        b.close()


def _watch(page, base_url: str) -> dict[str, list[str]]:
    """Collect console errors, page errors and any request that leaves this server."""
    seen: dict[str, list[str]] = {"errors": [], "external": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: None if r.url.startswith((base_url + "/", "data:"))
            else seen["external"].append(r.url))
    return seen


@pytest.mark.parametrize("width, height", VIEWPORTS, ids=[f"{w}x{h}" for w, h in VIEWPORTS])
def test_page_shows_the_models_labels_for_every_step(browser, base_url: str, recognizer: Recognizer,
                                                      width: int, height: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    seen = _watch(page, base_url)
    try:
        page.goto(base_url + "/", wait_until="networkidle")
        assert page.input_value("#conversation").splitlines() == [f"{s}: {t}" for s, t in EXAMPLE]
        sync_api.expect(page.locator("#model-info")).to_contain_text("Model: ")
        card = recognizer.card
        name = str(recognizer.source).replace("\\", "/").rsplit("/", 1)[-1]
        header = page.locator("#model-info").text_content()
        assert header.startswith(f"Model: {name} (trained on {card['dataset']}) · {len(recognizer.labels)} labels"), header
        split = "test" if (card.get("test") or {}).get("final") else "dev"
        assert header.endswith(f"{split} weighted F1 {card[split]['final']['weighted_f1']:.1f}"), header
        page.click("#run")
        page.wait_for_selector("body[data-state=done]", timeout=20_000)
        rows = page.evaluate(_READ_TABLE)

        expected = recognizer.predict([{"speaker": s, "text": t} for s, t in EXAMPLE])
        assert len(rows) == len(expected) == len(EXAMPLE)
        headers = page.locator("#results thead th").all_text_contents()
        assert headers == ["#", "Speaker", "Utterance", "Step 0", "Step 1", "Step 2", "Final"]
        for row, want, (speaker, text) in zip(rows, expected, EXAMPLE):
            assert (row["speaker"], row["text"]) == (speaker, text)
            assert row["steps"] == want["steps"]
            assert row["final"] == want["label"] == want["steps"][-1]
            assert row["prob"] == f"{100 * want['probs'][want['label']]:.1f}%"
            assert row["changed"] == [k for k in range(1, len(want["steps"]))
                                      if want["steps"][k] != want["steps"][k - 1]]
        # usable: nothing wider than the viewport, the button and the table on screen
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        box = page.locator("#run").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width and box["height"] >= 32
        assert page.locator("#results tbody tr").first.is_visible()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"serve-{width}x{height}.png"))
        page.screenshot(path=str(ARTIFACTS / f"serve-{width}x{height}-full.png"), full_page=True)
        assert seen["errors"] == [] and seen["external"] == [], seen
    finally:
        context.close()


def test_page_reports_input_and_server_errors(browser, base_url: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.goto(base_url + "/", wait_until="networkidle")
        page.fill("#conversation", "Chandler: hi\nno speaker here")
        page.click("#run")
        sync_api.expect(page.locator("#status")).to_have_text('line 2: expected "Speaker: text"')
        page.fill("#conversation", "Chandler: " + "x" * 6000)  # over the server's 5000 characters
        page.click("#run")
        sync_api.expect(page.locator("#status")).to_contain_text("utterances[0].text: 6000 characters")
        assert page.locator("#result").is_hidden()
    finally:
        context.close()


def test_live_mode_labels_each_turn_as_it_is_typed(browser, live_url: str, live_recognizer: Recognizer) -> None:
    """A causal model's page shows the live mode; each typed turn gets the label the model
    gives that utterance in the whole conversation, over the real WebSocket."""
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    seen = _watch(page, live_url)
    turns = EXAMPLE[:4]
    try:
        page.goto(live_url + "/", wait_until="networkidle")
        sync_api.expect(page.locator("#live")).to_be_visible()
        for i, (speaker, text) in enumerate(turns):
            page.fill("#live-speaker", speaker)
            page.fill("#live-text", text)
            page.press("#live-text", "Enter")
            sync_api.expect(page.locator("#live-turns li")).to_have_count(i + 1, timeout=20_000)
        got = page.evaluate("() => [...document.querySelectorAll('#live-turns li')].map(li => "
                            "[li.querySelector('.speaker').textContent, li.dataset.label])")
        want = live_recognizer.predict([{"speaker": s, "text": t} for s, t in turns])
        assert got == [[s, w["label"]] for (s, _), w in zip(turns, want)]
        page.fill("#live-speaker", "")
        page.click("#live-send")
        sync_api.expect(page.locator("#live-status")).to_have_text("Type who speaks.")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-live-390x844.png"), full_page=True)
        assert seen["errors"] == [] and seen["external"] == [], seen
    finally:
        context.close()


def test_live_mode_is_hidden_for_a_model_that_reads_later_utterances(browser, base_url: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.goto(base_url + "/", wait_until="networkidle")
        sync_api.expect(page.locator("#model-info")).to_contain_text("Model: ")
        assert page.locator("#live").is_hidden()
    finally:
        context.close()
