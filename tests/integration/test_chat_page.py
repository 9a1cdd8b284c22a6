"""The chat page in headless Chromium against a running server."""

from __future__ import annotations

import pytest
from support.serve import (
    _chat_ids,
    _reference,
    _reference_ids,
    running,
)

from llada.sampling import SAMPLER_PRESETS


def _chromium():
    """A headless Chromium driven by Selenium, or a skip saying what is missing (a failure where CI needs it)."""
    import os
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in [("chromium", browser), ("chromedriver", driver)] if not path]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        why = f"the page test needs {', '.join(missing)} (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("LLADA_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,800"]:
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(driver))


# Records, for every render of the answer canvas, how many of its positions were still masked and how many end-run
# markers it showed, every status line, and the body of every request the page sends.
_WATCH_CANVAS = """
window.maskedCounts = [];
window.restCounts = [];
window.statuses = [];
window.sentBodies = [];
const pageFetch = window.fetch;
window.fetch = (url, init) => { window.sentBodies.push(JSON.parse(init.body)); return pageFetch(url, init); };
new MutationObserver(() => {
  const canvas = document.querySelector('#log .turn:last-child .canvas');
  if (canvas && canvas.children.length) {
    window.maskedCounts.push(canvas.querySelectorAll('.mask').length);
    window.restCounts.push(canvas.querySelectorAll('.rest').length);
  }
}).observe(document.getElementById('log'), {childList: true, subtree: true});
new MutationObserver(() => window.statuses.push(document.getElementById('status').textContent))
  .observe(document.getElementById('status'), {childList: true, subtree: true, characterData: true});
"""


def _ask(browser, wait, text, **controls):
    from selenium.webdriver.common.by import By

    for name, value in controls.items():
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(str(value))
    if text is not None:
        browser.find_element(By.ID, "prompt").send_keys(text)
    browser.find_element(By.ID, "send").click()
    # the button is disabled while the answer streams in; the status line then says "done" or the error
    wait.until(lambda b: b.find_element(By.ID, "send").is_enabled())


def test_chat_page_in_headless_chromium(bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tok = bundle.tokenizer
    browser = _chromium()
    # 0.1 s per forward: each denoising state reaches the page in its own network chunk
    with running(bundle, delay=0.1) as (url, _):
        try:
            wait = WebDriverWait(browser, 60)
            browser.get(url + "/")
            browser.execute_script(_WATCH_CANVAS)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#preset option")) > 1)
            shown = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#preset option")]
            assert shown == ["", *SAMPLER_PRESETS]  # "" is the server's default
            # the legend: the step scale as swatches, early (blue) to late (red)
            legend = browser.find_element(By.ID, "legend")
            assert legend.is_displayed() and "early" in legend.text and "late" in legend.text
            swatches = legend.find_elements(By.CSS_SELECTOR, ".swatches span")
            assert len({w.value_of_css_property("background-color") for w in swatches}) == len(swatches) > 3
            _ask(browser, wait, "what is two plus two", steps=8, max_tokens=8, block_length=4)
            assert browser.find_element(By.ID, "status").text == "done in 8 steps"

            first = [{"role": "user", "content": "what is two plus two"}]
            ids = _reference_ids(bundle, _chat_ids(tok, first), steps=8, gen_length=8, block_length=4)
            want = tok.decode(ids, skip_special_tokens=True).lstrip()
            (final,) = browser.find_elements(By.CSS_SELECTOR, ".answer.final")
            assert final.get_attribute("textContent") == want
            assert want and browser.find_element(By.ID, "log").text.count(want) == 1  # the answer, once

            # The block filled in one token per step, and the page drew the states in between, saying which step.
            counts = browser.execute_script("return window.maskedCounts")
            assert counts[-1] == 0
            assert counts == sorted(counts, reverse=True)
            assert len({c for c in counts if 0 < c < 8}) >= 3, counts
            statuses = browser.execute_script("return window.statuses")
            assert [f"denoising: step {k} of 8" for k in range(1, 9)] == [t for t in statuses if "step" in t
                                                                           and "done" not in t]
            spans = browser.find_elements(By.CSS_SELECTOR, "#log .turn:last-child .canvas span:not(.rest)")
            assert len(spans) == len(ids)  # the answer's tokens; anything after them is one marker
            steps = [int(s.get_attribute("title").removeprefix("step ").split(":")[0]) for s in spans]
            assert len(set(steps)) == len(ids)
            assert len({s.value_of_css_property("background-color") for s in spans}) == len(ids)  # colour = step
            browser.save_screenshot(str(tmp_path / "chat.png"))

            # A second turn carries the conversation so far, with temperature and threshold set.
            _ask(browser, wait, "the cat", temperature=0, threshold=0.5)
            second = first + [{"role": "assistant", "content": want}, {"role": "user", "content": "the cat"}]
            want2 = _reference(bundle, _chat_ids(tok, second), steps=8, gen_length=8, block_length=4, threshold=0.5)
            assert browser.find_elements(By.CSS_SELECTOR, ".answer.final")[-1].get_attribute("textContent") == want2

            # A control out of range: the server's 422 message is shown, the failed turn leaves the conversation
            # and its text stays in the box; fixing the control and resending continues where the chat was.
            _ask(browser, wait, "a dog", steps=0)
            assert "steps" in browser.find_element(By.ID, "status").text
            assert browser.find_element(By.ID, "prompt").get_attribute("value") == "a dog"
            _ask(browser, wait, None, steps=8)
            assert browser.find_element(By.ID, "status").text.startswith("done")
            third = second + [{"role": "assistant", "content": want2}, {"role": "user", "content": "a dog"}]
            want3 = _reference(bundle, _chat_ids(tok, third), steps=8, gen_length=8, block_length=4, threshold=0.5)
            answers = browser.find_elements(By.CSS_SELECTOR, "#log .answer")
            assert [a.get_attribute("textContent") for a in answers] == [want, want2, want3]
            sent = browser.execute_script("return window.sentBodies")
            assert [b["messages"] for b in sent] == [first, second, third, third]
            assert [(b["steps"], b["max_tokens"], b["block_length"], b["remasking"]) for b in sent] == [
                (8, 8, 4, "low_confidence"), (8, 8, 4, "low_confidence"), (0, 8, 4, "low_confidence"),
                (8, 8, 4, "low_confidence")]
            assert "temperature" not in sent[0] and [(b["temperature"], b["threshold"]) for b in sent[1:]] == [
                (0, 0.5)] * 3

            # Nothing came from anywhere but this server.
            loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
            assert loaded and all(name.startswith(url + "/") for name in loaded), loaded
            browser.save_screenshot(str(tmp_path / "chat-after.png"))
        finally:
            browser.quit()
    assert (tmp_path / "chat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chat_page_collapses_trailing_end_tokens_into_one_marker(bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tok = bundle.tokenizer
    words = tok(" cat sat", add_special_tokens=False)["input_ids"]
    browser = _chromium()
    with running(bundle, delay=0.05, tail=words + [tok.eos_token_id] * 6) as (url, _):
        try:
            wait = WebDriverWait(browser, 60)
            browser.get(url + "/")
            browser.execute_script(_WATCH_CANVAS)
            _ask(browser, wait, "the cat", steps=8, max_tokens=len(words) + 6, block_length=len(words) + 6)
            (final,) = browser.find_elements(By.CSS_SELECTOR, ".answer.final")
            assert final.get_attribute("textContent") == "cat sat"
            (rest,) = final.find_elements(By.CSS_SELECTOR, ".rest")
            assert rest.get_attribute("data-count") == "6" and tok.eos_token in rest.get_attribute("title")
            shown = browser.execute_script("return getComputedStyle(arguments[0], '::after').content", rest)
            assert "6" in shown and rest.is_displayed(), shown  # one marker, with its count
            assert max(browser.execute_script("return window.restCounts")) == 1  # while denoising too
            browser.save_screenshot(str(tmp_path / "eos.png"))
        finally:
            browser.quit()


def test_chat_page_sends_the_api_key(bundle):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chromium()
    with running(bundle, api_key="sekret") as (url, _):
        try:
            wait = WebDriverWait(browser, 60)
            browser.get(url + "/")  # the page itself is public; the API behind it is not
            _ask(browser, wait, "the cat", steps=4, max_tokens=4, block_length=4)
            assert "API key" in browser.find_element(By.ID, "status").text
            assert browser.find_element(By.ID, "prompt").get_attribute("value") == "the cat"
            _ask(browser, wait, None, api_key="sekret")
            assert browser.find_element(By.ID, "status").text.startswith("done")
            assert len(browser.find_elements(By.CSS_SELECTOR, "#log .answer.final")) == 1
        finally:
            browser.quit()
