"""The app end to end in a real browser: Debian's chromium, driven by Playwright, against
``streamlit run ui/app.py`` on localhost with the real embedded model.

    .venv/bin/python -m pytest -q tests/e2e            # screenshots: tests/e2e/screenshots/

Each test saves full-page screenshots of the states it passes through (``E2E_SCREENSHOTS``
moves them). The page logic is tested faster with AppTest (tests/test_ui_*.py); this file
checks what only a browser shows: streaming, expanders, downloads, themes, phone width.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.e2e.conftest import LOGIN_PASSWORD, SCREENSHOTS

pytestmark = pytest.mark.slow

DOC_NAME = "zorblax.md"
DOC_TEXT = "# Festivals\n\nThe Zorblax festival is held in Quillton every May.\n"
QUESTION = "Where is the Zorblax festival held?"
# The two sessions of test_two_users_at_once ask what no other test asks.
A_QUESTION = "Which town holds the Zorblax festival?"
B_QUESTION = "What is the capital of France?"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 400, "height": 800}

# The first chat page builds the model: on a cold cache it converts the GGUF file (~30 s
# alone, more on a busy machine). Answers are 48 tokens, but may queue behind another.
MODEL_LOAD_MS = 240_000
ANSWER_MS = 120_000
expect.set_options(timeout=30_000)

# Record the text of every assistant message that shows a Stop button (that is, one that is
# streaming), each time it changes: proof that the answer arrives in pieces, not at once.
STREAM_RECORDER = """
window.__stream = [];
setInterval(() => {
  const main = document.querySelector('[data-testid="stMainBlockContainer"]');
  if (!main) return;
  for (const m of main.querySelectorAll('[data-testid="stChatMessage"]')) {
    const streaming = [...m.querySelectorAll('button')].some(b => b.innerText.trim().endsWith('Stop'));
    // The spinner ("Reading 1 source and the question…") is not the answer's text.
    const spinner = m.querySelector('[data-testid="stSpinner"]');
    const text = m.innerText.replace(spinner ? spinner.innerText : '', '').replace(/stop_circle|Stop/g, '').trim();
    if (streaming && text && window.__stream.at(-1) !== text) window.__stream.push(text);
  }
}, 25);
"""


# -- helpers -----------------------------------------------------------------------------------
# The height of everything on show: Streamlit scrolls inside its main section and its
# sidebar, not the document. A collapsed sidebar (phone width) squeezes its content into a
# tall sliver: it does not count.
CONTENT_HEIGHT = """() => {
  const heights = [document.documentElement.scrollHeight, document.querySelector('#stMain').scrollHeight];
  const sidebar = document.querySelector('[data-testid="stSidebar"]');
  if (sidebar && sidebar.getBoundingClientRect().left >= 0 && sidebar.offsetWidth > 200)
    heights.push(sidebar.querySelector('[data-testid="stSidebarContent"]').scrollHeight);
  return Math.max(...heights);
}"""


def shot(page: Page, name: str, *, idle: bool = True) -> Path:
    """A screenshot of the whole page (once the app is idle, unless ``idle=False``): the
    viewport is stretched to the content's height for the picture."""
    if idle:
        settle(page)
    size = page.viewport_size
    height = page.evaluate(CONTENT_HEIGHT)
    path = SCREENSHOTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(height, 5000)})
        page.wait_for_timeout(150)  # let the layout settle at the new height
    page.screenshot(path=path, full_page=True, animations="disabled")
    if height > size["height"]:
        page.set_viewport_size(size)
    return path


IDLE = """() => !document.querySelector('[data-testid="stStatusWidget"]')
             && !document.querySelector('[data-stale="true"]')"""


def settle(page: Page) -> None:
    """Wait until the script run is over and nothing on the page is stale: a click during a
    rerun can land where a widget was a moment ago."""
    page.wait_for_function(IDLE, timeout=ANSWER_MS, polling=50)


def main(page: Page) -> Locator:
    return page.get_by_test_id("stMainBlockContainer")


def chat_box(page: Page) -> Locator:
    return page.get_by_test_id("stChatInputTextArea")


def stop_button(page: Page) -> Locator:
    # The header has a "Stop" of its own (Streamlit's stop-the-script); this is the answer's.
    return main(page).get_by_role("button", name="Stop")


def last_answer(page: Page) -> Locator:
    return main(page).get_by_test_id("stChatMessage").filter(has=page.get_by_test_id("stFeedback")).last


def keyed(scope: Locator | Page, prefix: str) -> Locator:
    """The visible button of a widget keyed ``<prefix><message id>`` (a button with help text
    renders a second, hidden copy)."""
    return scope.locator(f"[class*='st-key-{prefix}'] button:visible")


def open_chat(page: Page) -> None:
    expect(chat_box(page)).to_be_visible(timeout=MODEL_LOAD_MS)
    expect(chat_box(page)).to_be_editable()
    settle(page)


def send(page: Page, text: str) -> None:
    """Type a message and click the send button."""
    chat_box(page).fill(text)
    page.get_by_test_id("stChatInputSubmitButton").click()


def wait_for_answer(page: Page, before: int) -> Locator:
    """Wait until a new answer is stored and shown with its rating widgets."""
    expect(main(page).get_by_test_id("stFeedback")).to_have_count(before + 1, timeout=ANSWER_MS)
    expect(stop_button(page)).to_have_count(0)
    settle(page)
    return last_answer(page)


def streamed(page: Page) -> list[str]:
    """The texts the streaming answer showed, in order, since the last call."""
    return page.evaluate("() => window.__stream.splice(0)")


def assert_streamed(frames: list[str]) -> None:
    assert len(frames) >= 2, f"the answer did not arrive in pieces: {frames}"
    assert len(frames[-1]) > len(frames[0]), f"the streamed text did not grow: {frames}"


def nav(page: Page, title: str) -> None:
    settle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=MODEL_LOAD_MS)


def background_luminance(page: Page) -> float:
    rgb = page.evaluate(
        "() => getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor"
    )
    r, g, b = (int(x) for x in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.fixture
def new_page(browser, app_server):
    """Open a page of the app in a fresh browser context (a separate user session); the
    contexts close after the test (after a failure's screenshots are taken)."""
    contexts: list[BrowserContext] = []

    def open_page(path: str = "/", **options) -> Page:
        context = browser.new_context(**({"viewport": DESKTOP} | options))
        context.add_init_script(STREAM_RECORDER)
        contexts.append(context)
        page = context.new_page()
        page.goto(app_server.url + path)
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def document(browser, app_server, tmp_path_factory) -> str:
    """The Documents page: the empty library; then a small Markdown file and a broken PDF
    uploaded together: the first is listed, the second named in an error message."""
    folder = tmp_path_factory.mktemp("upload")
    path = folder / DOC_NAME
    path.write_text(DOC_TEXT, encoding="utf-8")
    broken = folder / "broken.pdf"
    broken.write_bytes(b"this is not a PDF")
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    try:
        page.goto(app_server.url + "/documents")
        expect(page.get_by_role("heading", name="Library (0)")).to_be_visible(timeout=MODEL_LOAD_MS)
        expect(main(page).get_by_text("No documents yet: upload one above")).to_be_visible()
        shot(page, "01-documents-empty")

        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([path, broken])
        expect(page.get_by_role("button", name=f"Remove {DOC_NAME}")).to_be_visible()
        expect(page.get_by_role("button", name="Remove broken.pdf")).to_be_visible()
        page.get_by_role("button", name="Add to library").click()
        expect(page.get_by_role("heading", name="Library (1)")).to_be_visible(timeout=ANSWER_MS)
        expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text(DOC_NAME)
        expect(page.get_by_test_id("stAlertContentError")).to_contain_text("broken.pdf")
        expect(main(page).get_by_text(DOC_NAME, exact=True)).to_be_visible()
        expect(main(page).get_by_text("1 chunk · indexed")).to_be_visible()
        shot(page, "02-documents-uploaded")
    except Exception:
        page.screenshot(path=SCREENSHOTS / "FAILED-documents.png", full_page=True)
        raise
    finally:
        context.close()
    return DOC_NAME


# -- the tests ---------------------------------------------------------------------------------
def test_document_chat_feedback_export(new_page, document):
    """Upload, ask (typing and Enter only), watch it stream, open the cited source, rate,
    regenerate and pick the better version, vote in compare mode, see the counts on the
    Feedback page, export and download; and the Models page's empty state."""
    page = new_page("/")
    try:  # the first chat page of a run builds the model under a spinner
        page.get_by_text("Loading the model").wait_for(timeout=5_000)
        shot(page, "03a-chat-loading-model", idle=False)
    except PlaywrightTimeoutError:
        pass  # loaded already: it took less than a moment
    open_chat(page)
    expect(main(page).get_by_role("heading", name="Assistant")).to_be_visible()
    shot(page, "03-chat-empty")

    # Keyboard only: focus the chat box, type, press Enter.
    chat_box(page).focus()
    page.keyboard.type(QUESTION)
    page.keyboard.press("Enter")
    expect(stop_button(page)).to_be_visible(timeout=ANSWER_MS)
    shot(page, "04-chat-streaming", idle=False)
    answer = wait_for_answer(page, 0)
    assert_streamed(streamed(page))
    expect(main(page).get_by_test_id("stChatMessage").first).to_contain_text(QUESTION)
    expect(answer.get_by_test_id("stMarkdownContainer").first).to_contain_text("Quillton")

    # The cited source: its label names the document; expanded, it shows the chunk.
    source = answer.get_by_test_id("stExpander").filter(has_text=DOC_NAME)
    expect(source).to_have_count(1)
    expect(source).to_contain_text("[1]")
    source.locator("summary").click()
    expect(source.get_by_test_id("stExpanderDetails")).to_contain_text(
        "The Zorblax festival is held in Quillton every May.")
    shot(page, "05-chat-answer-source")

    # Rate it, with a tag.
    thumbs_up = answer.get_by_role("radio", name="Thumbs up")
    thumbs_up.click()
    expect(thumbs_up).to_have_attribute("aria-checked", "true")
    settle(page)
    tag = answer.get_by_role("button", name="too long")
    tag.click()
    expect(tag).to_have_attribute("aria-pressed", "true")
    expect(thumbs_up).to_have_attribute("aria-checked", "true")
    settle(page)

    # Regenerate, shorter (8 new tokens, typed into the sidebar's generation settings): a
    # second version streams, different from the first (greedy decoding would repeat it
    # word for word, and an identical pair is no training data). Flip back to the first
    # and mark it the best.
    page.get_by_test_id("stSidebar").get_by_text("Generation settings").click()
    max_new = page.locator(".st-key-max_new_tokens input")
    max_new.fill("8")
    max_new.press("Enter")
    expect(max_new).to_have_value("8")
    settle(page)
    keyed(answer, "regen_").click()
    expect(answer.get_by_text("2 / 2")).to_be_visible(timeout=ANSWER_MS)
    expect(stop_button(page)).to_have_count(0)
    # Eight tokens, and in the quoted answer mode the model stops at its first sentence: it
    # can be over in 0.2 s, before a poll for the Stop button comes round. The page's own
    # recorder (a MutationObserver) saw it shown with its Stop button all the same.
    assert streamed(page), "the second version was never shown while it was written"
    settle(page)
    keyed(answer, "alt_prev_").click()
    expect(answer.get_by_text("1 / 2")).to_be_visible()
    settle(page)
    expect(answer.get_by_role("radio", name="Thumbs up")).to_have_attribute("aria-checked", "true")
    keyed(answer, "best_").click()
    expect(answer.get_by_role("button", name="Best ✓")).to_be_disabled()
    shot(page, "06-chat-versions-best")

    # Compare mode: two answers side by side, versions hidden until the vote.
    toggle = page.get_by_test_id("stSidebar").get_by_role("switch", name="Compare mode (A/B)")
    page.get_by_test_id("stSidebar").get_by_text("Compare mode (A/B)").click()
    expect(toggle).to_be_checked()
    settle(page)
    send(page, "When is the Zorblax festival?")
    vote_a = main(page).get_by_role("button", name="A is better")
    expect(vote_a).to_be_visible(timeout=2 * ANSWER_MS)
    settle(page)  # the streamed pair stays on the page, stale, until the rerun ends
    expect(main(page).get_by_text("Answer A", exact=True)).to_be_visible()
    expect(main(page).get_by_text("Answer B", exact=True)).to_be_visible()
    expect(main(page).get_by_text("Compared:")).to_have_count(0)
    shot(page, "07-compare-ballot")
    vote_a.click()
    expect(main(page).get_by_text("Compared: A won (A: base, B: base)")).to_be_visible()
    expect(vote_a).to_have_count(0)
    shot(page, "08-compare-voted")

    # The Feedback page counts all of it.
    nav(page, "Feedback")
    # The vote's winner is recorded as a choice too (it becomes a preference pair).
    for kind, count in (("thumbs up", 1), ("best-of choices", 2), ("compare votes", 1)):
        metric = main(page).get_by_test_id("stMetric").filter(has_text=kind)
        expect(metric.get_by_test_id("stMetricValue")).to_have_text(str(count))
    expect(main(page).get_by_text("Tags: too long (1)")).to_be_visible()
    shot(page, "09-feedback")

    # Export preference pairs (the best-of choice and the vote) and download them.
    settle(page)
    page.get_by_role("button", name="Export").click()
    expect(main(page).get_by_test_id("stAlertContentSuccess")).to_contain_text("Exported to")
    downloads = main(page).locator("[class*='st-key-download_'] button:visible")
    expect(downloads.first).to_be_visible()
    shot(page, "10-feedback-exported")
    rows = []
    for i in range(downloads.count()):
        with page.expect_download() as info:
            downloads.nth(i).click()
        lines = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
        rows += [json.loads(line) for line in lines if line.strip()]
    # The regenerated pair; the vote's pair too unless both samples said the same.
    assert rows, "the export downloaded no rows"
    assert any("every May" in json.dumps(r["chosen"]) for r in rows), rows
    assert all(r["chosen"] != r["rejected"] for r in rows), rows

    nav(page, "Models")
    expect(main(page).get_by_text("No trained versions yet")).to_be_visible()
    shot(page, "11-models-empty")


def test_phone_width(new_page, document):
    """At 400 px the chat works: send, read the streamed answer, reach its actions."""
    page = new_page("/", viewport=PHONE, is_mobile=True, has_touch=True)
    open_chat(page)
    expect(page.get_by_test_id("stSidebarContent")).not_to_be_in_viewport()
    send(page, QUESTION)
    answer = wait_for_answer(page, 0)
    assert_streamed(streamed(page))
    expect(answer).to_contain_text("Quillton")
    for action in (answer.get_by_role("radio", name="Thumbs up"), keyed(answer, "regen_")):
        action.scroll_into_view_if_needed()
        expect(action).to_be_in_viewport()
    answer.get_by_role("radio", name="Thumbs up").tap()
    expect(answer.get_by_role("radio", name="Thumbs up")).to_have_attribute("aria-checked", "true")
    overflow = page.evaluate(
        "() => { const m = document.querySelector('#stMain');"
        " return m.scrollWidth - m.clientWidth; }"
    )
    assert overflow <= 1, f"the page scrolls sideways by {overflow} px at 400 px width"
    shot(page, "12-phone-chat")
    page.get_by_test_id("stExpandSidebarButton").click()
    expect(page.get_by_test_id("stSidebarContent")).to_be_in_viewport()
    shot(page, "13-phone-sidebar")


def test_dark_theme(new_page, document):
    """Streamlit follows the system theme: an answer with its source, in the dark."""
    page = new_page("/", color_scheme="dark")
    open_chat(page)
    assert background_luminance(page) < 0.2
    send(page, QUESTION)
    answer = wait_for_answer(page, 0)
    source = answer.get_by_test_id("stExpander").filter(has_text=DOC_NAME)
    source.locator("summary").click()
    expect(source.get_by_test_id("stExpanderDetails")).to_contain_text("Quillton")
    shot(page, "14-chat-dark")


def test_two_users_at_once(new_page, document):
    """Two browser sessions send at the same moment; each answer streams into its own page."""
    a = new_page("/")
    b = new_page("/")
    open_chat(a)
    open_chat(b)
    chat_box(a).fill(A_QUESTION)
    chat_box(b).fill(B_QUESTION)
    chat_box(a).press("Enter")
    chat_box(b).press("Enter")
    answer_a = wait_for_answer(a, 0)
    answer_b = wait_for_answer(b, 0)
    frames_a, frames_b = streamed(a), streamed(b)
    assert_streamed(frames_a)
    assert_streamed(frames_b)

    for page, mine, theirs in ((a, A_QUESTION, B_QUESTION), (b, B_QUESTION, A_QUESTION)):
        expect(main(page).get_by_test_id("stChatMessage")).to_have_count(2)
        expect(main(page).get_by_test_id("stChatMessage").first).to_contain_text(mine)
        expect(main(page)).not_to_contain_text(theirs)
    expect(answer_a).to_contain_text("Quillton")
    expect(answer_b).to_contain_text("Paris")
    assert not any("Paris" in f for f in frames_a), frames_a
    assert not any("Quillton" in f for f in frames_b), frames_b
    shot(a, "15-two-users-a")
    shot(b, "16-two-users-b")

    # Login is off here: one user, every session lists every conversation (see
    # test_two_logins for users who must not see each other's).


def sidebar_titles(page: Page) -> Locator:
    return page.get_by_test_id("stSidebar").locator("[class*='st-key-conv_'] button:visible")


def log_in(page: Page, name: str, password: str = LOGIN_PASSWORD) -> None:
    expect(page.get_by_role("heading", name="Log in", level=1)).to_be_visible()
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_two_logins(browser, login_server):
    """With login on, alice and bob chat at the same time on one server: neither sees the
    other's conversation, and neither gets the admin's pages or upload."""
    pages = []
    try:
        for _ in range(2):
            context = browser.new_context(viewport=DESKTOP)
            context.add_init_script(STREAM_RECORDER)
            pages.append(context.new_page())
        alice, bob = pages
        alice.goto(login_server.url)
        log_in(alice, "alice", "not her password")
        expect(alice.get_by_test_id("stAlertContentError")).to_contain_text("Wrong user name or password")
        shot(alice, "17-login-refused")
        log_in(alice, "alice")
        bob.goto(login_server.url)
        log_in(bob, "bob")
        for page, name in ((alice, "alice"), (bob, "bob")):
            open_chat(page)
            expect(page.get_by_test_id("stSidebar")).to_contain_text(f"{name} · user")
            links = page.get_by_test_id("stSidebarNav").get_by_role("link")
            expect(links).to_have_count(3)
            expect(links.last).to_contain_text("Feedback")
            expect(page.get_by_test_id("stSidebarNav")).not_to_contain_text("Models")  # admins only
            expect(chat_box(page)).to_have_attribute("placeholder", "Ask anything")  # no attach

        send(alice, A_QUESTION)
        send(bob, B_QUESTION)
        wait_for_answer(alice, 0)
        wait_for_answer(bob, 0)
        for page, mine, theirs in ((alice, A_QUESTION, B_QUESTION), (bob, B_QUESTION, A_QUESTION)):
            page.reload()  # a new session: log in again, then see only one's own chat
            log_in(page, "alice" if page is alice else "bob")
            open_chat(page)
            expect(sidebar_titles(page).filter(has_text=mine)).to_have_count(1)
            expect(sidebar_titles(page)).to_have_count(1)
            expect(page.get_by_test_id("stSidebar")).not_to_contain_text(theirs)
        shot(alice, "18-login-alice")
        shot(bob, "19-login-bob")

        nav(bob, "Documents")
        expect(main(bob)).to_contain_text("Only an admin can add or remove documents")
        expect(bob.get_by_test_id("stFileUploaderDropzoneInput")).to_have_count(0)
        bob.get_by_role("button", name="Log out").click()
        expect(bob.get_by_role("heading", name="Log in", level=1)).to_be_visible()
    finally:
        for page in pages:
            page.context.close()


def test_no_request_leaves_the_machine(browser, login_server):
    """The login page, a login and a reload: every request the browser makes goes to the
    app itself (the favicon of a ":material/..." page icon came from fonts.gstatic.com)."""
    from urllib.parse import urlparse

    requests: list[str] = []
    context = browser.new_context(viewport=DESKTOP)
    context.on("request", lambda request: requests.append(request.url))
    try:
        page = context.new_page()
        page.goto(login_server.url)
        log_in(page, "bob")
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        page.reload()
        expect(page.get_by_role("heading", name="Log in", level=1)).to_be_visible()
        page.wait_for_load_state("networkidle")
        # The browser fetches the favicon itself, unseen by the request log: check its source.
        icon = page.eval_on_selector("link[rel='shortcut icon']", "e => e.href")
        assert icon.startswith(("data:", login_server.url)), icon
        assert requests
        outside = [u for u in requests if urlparse(u).scheme not in ("data", "blob")
                   and urlparse(u).hostname not in ("localhost", "127.0.0.1")]
        assert not outside, outside
    finally:
        context.close()


# -- a first day without surprises ---------------------------------------------------------------
def test_first_day_conversation_url_survives_a_reload(new_page, document):
    """A conversation has its own address: a reload reopens it, not a new empty chat."""
    page = new_page("/")
    open_chat(page)
    send(page, "Say hello to the Zorblax festival.")
    wait_for_answer(page, 0)
    page.wait_for_function("() => location.search.includes('conversation=')")
    address = page.url
    page.reload()
    open_chat(page)
    assert page.url == address
    expect(main(page).get_by_text("Say hello to the Zorblax festival.")).to_be_visible()
    expect(main(page).get_by_test_id("stFeedback")).to_have_count(1)
    expect(main(page).get_by_test_id("stAlertContentError")).to_have_count(0)
    shot(page, "20-first-day-reload-reopens-conversation")


def test_first_day_a_paste_over_the_limit_stays_in_the_box(new_page, document):
    """A 104,000-character paste is refused with the reason beside the box, and kept."""
    page = new_page("/")
    open_chat(page)
    pasted = "lorem ipsum dolor " * (104_000 // 18)
    send(page, pasted)
    expect(main(page).get_by_test_id("stAlertContentError")).to_contain_text("too long", timeout=ANSWER_MS)
    settle(page)
    assert chat_box(page).input_value() == pasted
    expect(main(page).get_by_test_id("stFeedback")).to_have_count(0)
    shot(page, "21-first-day-paste-kept")


def test_first_day_delete_asks_first(new_page, document, tmp_path):
    """The bin opens a question; only its Delete button deletes."""
    scratch = tmp_path / "scratch-notes.md"
    scratch.write_text("# Scratch\n\nNotes to delete again.\n", encoding="utf-8")
    page = new_page("/documents")
    expect(page.get_by_role("heading", name="Library (1)")).to_be_visible(timeout=MODEL_LOAD_MS)
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([scratch])
    page.get_by_role("button", name="Add to library").click()
    expect(page.get_by_role("heading", name="Library (2)")).to_be_visible(timeout=ANSWER_MS)
    settle(page)
    row = main(page).get_by_test_id("stHorizontalBlock").filter(has_text="scratch-notes.md")
    row.get_by_test_id("stPopover").get_by_role("button").click()
    question = page.get_by_test_id("stPopoverBody")
    expect(question).to_contain_text("Delete scratch-notes.md?")
    shot(page, "22-first-day-delete-asks")
    expect(page.get_by_role("heading", name="Library (2)")).to_be_visible()  # nothing yet
    question.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Library (1)")).to_be_visible(timeout=ANSWER_MS)
    expect(main(page).get_by_text("scratch-notes.md", exact=True)).to_have_count(0)


def test_first_day_an_upload_over_the_limit_says_so(new_page, document, tmp_path):
    """A 60 MB file (the limit is 50 MB) gets a message naming it, not a tooltip and silence."""
    big = tmp_path / "big-report.txt"
    big.write_bytes(b"lorem ipsum " * (60 * 1024 * 1024 // 12))
    page = new_page("/documents")
    expect(page.get_by_role("heading", name="Library (1)")).to_be_visible(timeout=MODEL_LOAD_MS)
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([big])
    expect(page.get_by_role("button", name="Remove big-report.txt")).to_be_visible(timeout=ANSWER_MS)
    page.get_by_role("button", name="Add to library").click()
    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_contain_text("big-report.txt", timeout=ANSWER_MS)
    expect(error).to_contain_text("over the 50 MB limit")
    expect(page.get_by_role("heading", name="Library (1)")).to_be_visible()
    shot(page, "23-first-day-upload-over-limit")
