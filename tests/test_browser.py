"""ChatPanel in a real browser: JupyterLab 4 + headless Chromium, driven the way a person uses it.

A throwaway JupyterLab (tests/browser_lab.py: 127.0.0.1, random port and token, temporary root,
``MLLM_NB_DEMO=1``) opens a notebook with three cells (import, ``load_vlm`` of the offline demo
fixture, ``ChatPanel(vlm, max_new_tokens=32)``); Chromium runs all cells, waits for the panel, then
types, clicks, uploads a PNG through the panel's hidden ``<input type=file>``, stops a reply, clears,
sends HTML and checks the newest message is in view. Screenshots go to build/browser/, with
``observations.json`` (what was seen: streamed frames, whether Stop landed mid-reply, timings).

The tests run in file order and share one server, browser and panel (module fixtures). ``make
test-browser`` installs what they need (apt: chromium, chromium-driver; pip: .venv-browser from
requirements/lock-browser.txt) and runs only this file; ``make test`` deselects the ``browser``
marker. Anywhere else they skip, naming what is missing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from browser_lab import ROOT, chrome, kernel_python, lab_server, missing, write_notebook
from PIL import Image, ImageDraw

_LACKS = missing()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,  # starts JupyterLab, a kernel and Chromium
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        bool(_LACKS), reason="browser test needs " + "; ".join(_LACKS) + " (make test-browser installs them)"
    ),
]

SHOTS = ROOT / "build" / "browser"
NOTEBOOK = "chat_panel.ipynb"
CELLS = [
    "import mllm_nb as mn",
    'vlm = mn.load_vlm("llava-hf/llava-1.5-7b-hf")',
    "panel = mn.ChatPanel(vlm, max_new_tokens=32); panel",
]
HTML_PROMPT = "<b>bold</b><script>alert(1)</script> and <img src=x onerror=alert(2)>"
#: Labels the panel itself writes in bold; any other <b> in the view would come from message text.
PANEL_BOLD = {"User:", "Assistant:", "System:", "Error:"}
#: Max new tokens for the reply that is stopped. The demo model's context is 256 tokens, so the long reply is
#: asked in a fresh conversation (the panel lowers the setting to what the context leaves, if need be).
LONG_REPLY_TOKENS = 200

# The panel's parts, found from its header (the only widget HTML that says DEMO MODE). The VBox's
# children start with the header, the conversation view and the attachments; the status is the last.
FIND_PANEL = """
const header = [...document.querySelectorAll('.jp-OutputArea .widget-html')]
    .find(e => e.textContent.includes('DEMO MODE'));
if (!header) return null;
const panel = header.parentElement;
const kids = [...panel.children];
const button = label => [...panel.querySelectorAll('button')].find(b => b.textContent.trim() === label);
return {
    panel: panel, header: header, view: kids[1], attachments: kids[2], status: kids[kids.length - 1],
    prompt: panel.querySelector('textarea'), upload: panel.querySelector('.widget-upload'),
    readout: panel.querySelector('.widget-readout'),
    send: button('Send'), stop: button('Stop'), clear: button('Clear'),
};
"""

# Every state the conversation view passes through, as text, from now on (window.__frames).
RECORD_FRAMES = FIND_PANEL.replace("return {", "const parts = {", 1) + """
window.__frames = [];
if (window.__frameObserver) window.__frameObserver.disconnect();
window.__frameObserver = new MutationObserver(() => window.__frames.push(parts.view.innerText));
window.__frameObserver.observe(parts.view, {childList: true, subtree: true, characterData: true});
"""

# Alerts, confirms and prompts are counted, never shown (an XSS in the view would call one).
TRAP_DIALOGS = """
window.__dialogs = [];
for (const name of ['alert', 'confirm', 'prompt']) {
    window[name] = (...args) => { window.__dialogs.push([name, String(args[0])]); return null; };
}
"""

# ipywidgets 8's upload button keeps its <input type=file> (display: none) out of the document and calls
# its click() to open the browser's file chooser. For the next such click only, the input is put into
# the page instead (no native dialog in headless Chromium), where WebDriver can give it a file.
EXPOSE_FILE_INPUT = """
const click = HTMLInputElement.prototype.click;
HTMLInputElement.prototype.click = function () {
    if (this.type !== 'file') return click.call(this);
    HTMLInputElement.prototype.click = click;
    this.setAttribute('data-test', 'chat-panel-file-input');
    document.body.appendChild(this);
};
"""

# Click Send, and Stop the moment it is enabled (a person's reflexes are too slow for the demo model).
SEND_THEN_STOP = FIND_PANEL.replace("return {", "const parts = {", 1) + """
window.__stopAt = null;
const sentAt = performance.now();
const watcher = new MutationObserver(() => {
    if (!parts.stop.disabled && window.__stopAt === null) {
        window.__stopAt = performance.now() - sentAt;
        parts.stop.click();
        watcher.disconnect();
    }
});
watcher.observe(parts.stop, {attributes: true, attributeFilter: ['disabled']});
parts.send.click();
"""

KERNEL_IDLE = """
const notebook = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
const indicator = notebook && notebook.querySelector('.jp-Notebook-ExecutionIndicator');
return !!indicator && indicator.getAttribute('data-status') === 'idle';
"""

# Is the newest message visible in the conversation view?
NEWEST_IN_VIEW = FIND_PANEL.replace("return {", "const parts = {", 1) + """
const view = parts.view;
// the element that scrolls: the view itself or the box inside it with overflow (ipywidgets puts the
// layout's overflow on the widget's node)
const scroller = [view, ...view.querySelectorAll('*')].find(
    e => e.scrollHeight > e.clientHeight + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowY)) || view;
const bubbles = [...view.querySelectorAll('div')].filter(d => {
    const label = d.firstElementChild;
    return label && label.tagName === 'B' && ['User:', 'Assistant:'].includes(label.textContent.trim());
});
const last = bubbles[bubbles.length - 1];
const box = scroller.getBoundingClientRect();
const rect = last ? last.getBoundingClientRect() : null;
const slack = 24;
return {
    scrollTop: scroller.scrollTop, clientHeight: scroller.clientHeight, scrollHeight: scroller.scrollHeight,
    atBottom: scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - slack,
    lastVisible: !!rect && rect.top >= box.top - slack && rect.bottom <= box.bottom + slack
        && rect.bottom <= window.innerHeight + slack && rect.height > 0,
    lastText: last ? last.innerText.slice(0, 80) : null, bubbles: bubbles.length,
};
"""


def wait_for(what: str, condition, timeout: float = 60.0, interval: float = 0.1):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as err:  # noqa: BLE001 - the page changes under us; try again
            last_error = err
        time.sleep(interval)
    detail = f" ({last_error})" if last_error else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


class Person:
    """The notebook page, with the few things a person does with the panel."""

    def __init__(self, driver, observations: dict) -> None:
        self.driver = driver
        self.observations = observations

    def parts(self) -> dict:
        found = self.driver.execute_script(FIND_PANEL)
        assert found, "the chat panel is not on the page"
        return found

    def status(self) -> str:
        return self.parts()["status"].text.strip()

    def view_text(self) -> str:
        return self.parts()["view"].text

    def idle(self) -> bool:
        parts = self.parts()
        return parts["send"].is_enabled() and not parts["stop"].is_enabled()

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", self.parts()["panel"])
        time.sleep(0.2)
        path = SHOTS / name
        self.driver.save_screenshot(str(path))
        return path

    def type_question(self, text: str) -> None:
        box = self.parts()["prompt"]
        box.click()
        box.clear()
        box.send_keys(text)
        wait_for("the question in the textarea", lambda: self.parts()["prompt"].get_attribute("value") == text, 10)

    def wait_reply(self, question: str, timeout: float = 60.0) -> str:
        """After Send: the question shows in the view (or the panel says why not), then the panel is idle."""
        first_line = question.splitlines()[0]
        try:
            wait_for(f"the question {first_line!r} in the conversation view, or an error",
                     lambda: first_line in self.view_text() or self.status().startswith("error"), timeout)
            wait_for("the panel to finish the reply", lambda: self.idle() and self.status().split(" ")[0] in
                     ("done", "stopped", "error"), timeout)
        except AssertionError as err:
            raise AssertionError(f"{err}; the panel now: {self.describe()}") from None
        return self.status()

    def describe(self) -> dict:
        """The panel's state in a failure message."""
        parts = self.parts()
        return {"status": self.status(), "view": self.view_text()[-600:], "send_enabled": parts["send"].is_enabled(),
                "stop_enabled": parts["stop"].is_enabled(), "prompt": parts["prompt"].get_attribute("value"),
                "max_tokens": parts["readout"].text, "dialogs": self.dialogs()}

    def ask(self, question: str, timeout: float = 60.0) -> str:
        self.type_question(question)
        self.driver.execute_script(RECORD_FRAMES)
        self.parts()["send"].click()
        return self.wait_reply(question, timeout)

    def frames(self) -> list[str]:
        return self.driver.execute_script("return window.__frames || [];")

    def last_answer(self) -> str:
        text = self.view_text()
        assert "Assistant:" in text, text
        return text.rsplit("Assistant:", 1)[1].strip()

    def set_max_tokens(self, value: int) -> None:
        """Type a number into the slider's readout and press Enter, as a person edits it."""
        from selenium.webdriver.common.keys import Keys

        readout = self.parts()["readout"]
        readout.click()
        readout.send_keys(Keys.CONTROL, "a")
        readout.send_keys(str(value), Keys.ENTER)
        wait_for(f"max new tokens = {value}", lambda: self.parts()["readout"].text.strip() == str(value), 10)

    def dialogs(self) -> list:
        from selenium.common.exceptions import NoAlertPresentException

        try:
            alert = self.driver.switch_to.alert
            text = alert.text
            alert.dismiss()
            return [["native", text]]
        except NoAlertPresentException:
            pass
        return self.driver.execute_script("return window.__dialogs || [];")


@pytest.fixture(scope="module")
def observations() -> dict:
    """What the run saw, written to build/browser/observations.json (the folder is emptied first)."""
    shutil.rmtree(SHOTS, ignore_errors=True)
    found: dict = {}
    yield found
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "observations.json").write_text(json.dumps(found, indent=2, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def person(tmp_path_factory: pytest.TempPathFactory, observations: dict):
    """JupyterLab with the notebook open in Chromium, all cells run, the panel on screen."""
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("browser")
    python = kernel_python()
    with lab_server(workdir, python) as lab:
        write_notebook(lab.root / NOTEBOOK, CELLS)
        observations["lab_started_s"] = round(time.monotonic() - started, 1)
        with chrome(workdir) as driver:
            try:
                driver.get(lab.notebook_url(NOTEBOOK))
                driver.execute_script(TRAP_DIALOGS)
                wait_for("the notebook's three cells", lambda: len(driver.find_elements(
                    By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")) == len(CELLS), 90)
                wait_for("the kernel to start", lambda: driver.execute_script(KERNEL_IDLE), 90)
                observations["notebook_open_s"] = round(time.monotonic() - started, 1)
                # Run > Run All Cells, from the menu bar
                menu = next(item for item in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                            if item.text.strip() == "Run")
                menu.click()
                entry = wait_for("the Run All Cells menu entry", lambda: next(
                    (e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                     if e.text.strip().startswith("Run All Cells")), None), 10)
                entry.click()
                wait_for("the chat panel (its header says DEMO MODE)", lambda: driver.execute_script(FIND_PANEL), 180)
                observations["panel_rendered_s"] = round(time.monotonic() - started, 1)
                yield Person(driver, observations)
            except BaseException:
                SHOTS.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(SHOTS / "failure-setup.png"))
                print("jupyter lab log:\n" + lab.log_tail())
                raise
            finally:
                observations["total_s"] = round(time.monotonic() - started, 1)


@pytest.fixture(autouse=True)
def shot_on_failure(person: Person, request: pytest.FixtureRequest):
    """A screenshot named after a test that failed (its call's report is logged before this teardown)."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        person.shot(f"failure-{request.node.name}.png")


def test_panel_renders_in_demo_mode(person: Person) -> None:
    parts = person.parts()
    assert "DEMO MODE" in parts["header"].text
    assert "Attach images, type a question and press Send." in person.view_text()
    assert person.idle() and person.status().startswith("ready")


def test_question_streams_an_answer(person: Person) -> None:
    question = "What shapes are in the picture?"
    status = person.ask(question)
    assert status.startswith("done"), status
    answer = person.last_answer()
    assert answer, person.view_text()
    # the reply streamed: the view showed the answer in progress (with its cursor) before the end
    frames = person.frames()
    in_progress = [f for f in frames if "▌" in f]
    person.observations["answer"] = {"text": answer, "frames": len(frames), "frames_in_progress": len(in_progress),
                                     "partial_texts": sorted({f.rsplit("Assistant:", 1)[-1].strip("▌ \n")
                                                              for f in in_progress})}
    assert in_progress, f"the view never showed a reply in progress; frames: {frames}"
    partial = [f for f in in_progress if f.rsplit("Assistant:", 1)[-1].strip("▌ \n")]
    assert partial, f"no part of the answer showed before the end; frames: {frames}"
    assert "▌" not in person.view_text()
    person.shot("panel-answer.png")


def test_upload_an_image_and_ask_about_it(person: Person, tmp_path: Path) -> None:
    picture = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(picture).rectangle((12, 12, 52, 52), fill=(220, 30, 30))
    path = tmp_path / "red-square.png"
    picture.save(path)
    from selenium.webdriver.common.by import By

    person.driver.execute_script(EXPOSE_FILE_INPUT)
    person.parts()["upload"].click()  # the Images button
    file_input = wait_for("the upload's file input", lambda: person.driver.find_element(
        By.CSS_SELECTOR, "input[type=file][data-test=chat-panel-file-input]"), 10)
    assert not file_input.is_displayed()  # still the hidden input; WebDriver may fill hidden file inputs
    file_input.send_keys(str(path))
    wait_for("the attachment thumbnail", lambda: "1 image attached" in person.parts()["attachments"].text, 30)
    assert person.driver.execute_script("return arguments[0].querySelectorAll('img').length;",
                                        person.parts()["attachments"]) == 1
    person.shot("panel-attached.png")
    status = person.ask("What colour is the square?")
    assert status.startswith("done"), status
    assert person.parts()["attachments"].text.strip() == ""  # sent with the question, no longer pending
    thumbs = person.driver.execute_script(
        "return [...arguments[0].querySelectorAll('img')].map(i => i.alt);", person.parts()["view"])
    assert thumbs == ["image 1"], thumbs
    person.observations["image_answer"] = person.last_answer()
    assert person.last_answer()
    person.shot("panel-image-answer.png")


def test_stop_during_a_reply(person: Person) -> None:
    person.parts()["clear"].click()  # room for a long reply in the demo model's 256-token context
    wait_for("an empty conversation", lambda: "Attach images, type a question" in person.view_text(), 30)
    person.set_max_tokens(LONG_REPLY_TOKENS)
    question = "What is in the picture?"  # the demo model's longest answer without an image (about 90 tokens)
    person.type_question(question)
    person.driver.execute_script(RECORD_FRAMES)
    person.driver.execute_script(SEND_THEN_STOP)
    status = person.wait_reply(question)
    stop_at = person.driver.execute_script("return window.__stopAt;")
    stopped = status.startswith("stopped")
    person.observations["stop"] = {"status": status, "stop_clicked_after_ms": stop_at, "landed_mid_reply": stopped,
                                   "frames_in_progress": sum("▌" in f for f in person.frames()),
                                   "answer": person.last_answer()}
    assert stop_at is not None, "Stop never became clickable during the reply"
    # non-busy afterwards: Send enabled, Stop disabled, status done (the reply beat the click) or stopped
    assert person.idle()
    assert status.split(" ")[0] in ("stopped", "done"), status
    if stopped:
        assert "(stopped)" in person.view_text()
    assert "▌" not in person.view_text()
    person.shot("panel-stopped.png")


def test_clear(person: Person) -> None:
    person.parts()["clear"].click()
    wait_for("an empty conversation", lambda: "Attach images, type a question" in person.view_text(), 30)
    assert "User:" not in person.view_text() and "Assistant:" not in person.view_text()
    assert person.status().startswith("ready")
    person.shot("panel-cleared.png")


def test_html_in_a_question_is_shown_as_text(person: Person) -> None:
    person.set_max_tokens(32)
    status = person.ask(HTML_PROMPT)
    assert status.startswith("done"), status
    view = person.parts()["view"]
    assert HTML_PROMPT in view.text  # literally, as typed
    bold = person.driver.execute_script(
        "return [...arguments[0].querySelectorAll('b, strong')].map(b => b.textContent.trim());", view)
    assert set(bold) <= PANEL_BOLD, bold  # no <b>bold</b> element from the user's text
    assert "bold" not in bold
    injected = person.driver.execute_script(
        "return arguments[0].querySelectorAll('script, img[src=\"x\"], [onerror]').length;", view)
    assert injected == 0
    time.sleep(0.5)  # an onerror handler would have fired by now
    assert person.dialogs() == []
    person.shot("panel-html-inert.png")


def test_newest_message_is_in_view(person: Person) -> None:
    """Once the conversation is taller than the view (480 px), the newest message must still show.

    The tall message is a pasted note of blank lines: tall on screen (pre-wrap) but one token a line,
    so the whole conversation still fits the demo model's 256-token context.
    """
    status = person.ask("A pasted note:" + "\n" * 24 + "(end of note) What colour is it?")
    assert status.startswith("done"), status
    person.driver.execute_script("arguments[0].scrollIntoView({block: 'nearest'});", person.parts()["view"])
    time.sleep(0.3)  # let a smooth scroll, if the panel uses one, settle
    where = person.driver.execute_script(NEWEST_IN_VIEW)
    person.observations["scroll"] = where
    person.driver.save_screenshot(str(SHOTS / "panel-newest-message.png"))
    assert where["scrollHeight"] > where["clientHeight"], f"the conversation never overflowed the view: {where}"
    assert where["atBottom"] or where["lastVisible"], f"the newest message is out of view: {where}"
    # and the check can tell: a person scrolling the conversation up (mouse wheel) takes the newest out of view
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    def newest_hidden() -> dict | None:
        now = person.driver.execute_script(NEWEST_IN_VIEW)
        return None if now["atBottom"] or now["lastVisible"] else now

    wheel_on_view = ScrollOrigin.from_element(person.parts()["view"])
    ActionChains(person.driver).scroll_from_origin(wheel_on_view, 0, -3000).perform()
    person.observations["scrolled_up_by_hand"] = wait_for("the newest message out of view", newest_hidden, 10)


LAYOUT = """
const panel = arguments[0];
const rect = panel.getBoundingClientRect();
const cut = [...panel.querySelectorAll('button')]
    .filter(b => b.offsetParent !== null && b.scrollWidth > b.clientWidth + 1).map(b => b.textContent.trim());
const sliders = [...panel.querySelectorAll('.widget-slider')].map(s => {
    const track = s.querySelector('.slider-container') || s.querySelector('.slider');
    return track ? Math.round(track.getBoundingClientRect().width) : -1;
});
const outside = [...panel.querySelectorAll('*')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.right > rect.right + 1;
}).length;
return {width: Math.round(rect.width), overflowing: panel.scrollWidth > panel.clientWidth + 1, outside: outside,
        cut: cut, sliders: sliders};
"""


def test_the_panel_still_reads_in_a_1000_px_window(person: Person) -> None:
    """No sideways overflow, no button label cut short, every slider keeps a usable track."""
    driver = person.driver
    size = driver.get_window_size()
    try:
        driver.set_window_size(1000, size["height"])
        time.sleep(1.0)  # let Lab lay the notebook out again
        layout = driver.execute_script(LAYOUT, person.parts()["panel"])
        person.observations["layout_1000px"] = layout
        person.shot("panel-1000px.png")
        assert not layout["overflowing"] and layout["outside"] == 0, layout
        assert layout["cut"] == [], layout
        assert layout["sliders"] and min(layout["sliders"]) >= 80, layout
    finally:
        driver.set_window_size(size["width"], size["height"])
