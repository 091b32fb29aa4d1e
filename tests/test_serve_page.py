"""The playground page (``GET /``) in a real headless Chromium, driven by Playwright, against a live server.

The browser is Debian's ``/usr/bin/chromium`` (Playwright never downloads one here). Without it, or
without the ``playwright`` package, these tests skip; with ``VIDCORE_REQUIRE_CHROMIUM=1`` (CI sets it)
they fail instead. The server is a child `vidcore serve` of the embedded latte-shapes demo with an API key.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import tomllib

pytest.importorskip("fastapi")
pytest.importorskip("vidcore_latte")

import serve_live  # noqa: E402
from serve_live import httpx  # noqa: E402

CHROMIUM = Path(os.environ.get("VIDCORE_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STATIC = Path(__file__).resolve().parent.parent / "vidcore" / "serve" / "static"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def unavailable(reason: str) -> None:
    if os.environ.get("VIDCORE_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{reason}, and VIDCORE_REQUIRE_CHROMIUM=1 says these tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = serve_live.start(tmp_path_factory.mktemp("serve-page"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install playwright; no browser download)")
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium-profile")),
                                                       executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield context
        context.close()


@pytest.fixture
def page(browser, live):
    page = browser.new_page()
    seen: list = []
    page.on("request", lambda request: seen.append(request))
    SEEN[page] = seen
    page.goto(f"{live.url}/")
    yield page
    page.close()
    SEEN.pop(page, None)


SEEN: dict = {}  # page -> every request it made


def js(page, body: str):
    """Evaluate a function body in the page (a function, not a string to eval: the page's CSP forbids eval)."""
    return page.evaluate(f"() => {{ {body} }}")


def enter_key(page, key: str = serve_live.KEY) -> None:
    page.wait_for_selector("#key-row:not([hidden])")
    page.fill("#api-key", key)
    page.click("#key-save")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 0")


def fill(page, **fields: str) -> None:
    for name, value in fields.items():
        page.fill(f"#{name}", value)


# -- the page as files --------------------------------------------------------------------------------
def test_the_page_is_self_contained_and_sent_with_a_strict_policy(live):
    with httpx.Client(base_url=live.url, timeout=30) as http:  # no key: the page itself is open
        index = http.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        csp = index.headers["content-security-policy"]
        assert csp.startswith("default-src 'self';") and "unsafe" not in csp and "frame-ancestors 'none'" in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            r = http.get(f"/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
            assert r.headers["content-security-policy"] == csp and r.content == (STATIC / name).read_bytes()
        for bad in ("nope.js", "..%2Fapp.py", "index.html%00"):
            assert http.get(f"/static/{bad}").status_code == 404
        assert http.get("/v1/models").status_code == 401  # the API behind it still needs the key
        assert http.get("/health").json()["api_key_required"] is True
    html = index.text
    assert re.findall(r'<script[^>]*src="([^"]+)"', html) == ["/static/app.js"]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "no inline script"
    assert not re.search(r"\sstyle=|\son[a-z]+=", html), "no inline style or handler attributes"
    for text in (html, (STATIC / "app.js").read_text(), (STATIC / "style.css").read_text()):
        assert not re.search(r"https?://", text), "nothing fetched from elsewhere"
        assert "innerHTML" not in text and "eval(" not in text


def test_the_static_files_are_package_data():
    data = tomllib.loads((STATIC.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["vidcore.serve"]
    files = sorted(p.name for p in STATIC.iterdir())
    assert files == ["app.js", "index.html", "style.css"]
    for name in files:
        assert any(Path("static", name).match(pat) for pat in patterns), name


# -- in the browser -------------------------------------------------------------------------------------
def test_submit_watch_the_progress_play_the_video_and_see_it_in_the_history(page, live):
    page.wait_for_selector("#key-row:not([hidden])")  # the server needs a key: the page asks for it
    keyless = len(SEEN[page])
    enter_key(page)
    assert page.locator("#model option").all_text_contents() == ["latte-shapes"]
    assert js(page, "return sessionStorage.getItem('vidcore.apiKey')") == serve_live.KEY
    fill(page, prompt="a red ball moving left", frames="16", steps="48", seed="5")
    page.click("#submit")
    page.wait_for_selector("#current:not([hidden])")
    seen_progress = set()
    deadline = time.time() + 120
    while time.time() < deadline:
        seen_progress.add(int(page.locator("#progress").get_attribute("value") or 0))
        if page.locator("#current-status").text_content() in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert page.locator("#current-status").text_content() == "completed", page.locator("#job-error").text_content()
    page.wait_for_function("() => { const v = document.getElementById('player'); "
                           "return !v.hidden && v.readyState >= 2 && v.duration > 0; }", timeout=30000)
    duration, width, height, size = js(page, "const v = document.getElementById('player'); "
                                       "return [v.duration, v.videoWidth, v.videoHeight, Number(v.dataset.bytes)];")
    assert duration == pytest.approx(2.0, abs=0.2) and (width, height) == (64, 64)  # 16 frames at 8 fps
    video_id = page.locator("#current-id").text_content()
    with live.http() as http:
        content = http.get(f"/v1/videos/{video_id}/content").content
    assert size == len(content) > 0 and content[4:8] == b"ftyp"
    assert page.locator("#progress").get_attribute("value") == "100"
    assert any(0 < p < 100 for p in seen_progress), sorted(seen_progress)  # the bar moved while it ran
    page.wait_for_selector("#record-box:not([hidden])")
    record = page.locator("#record").text_content()
    assert '"seed": 5' in record and '"steps": 48' in record and '"complete": true' in record
    row = page.locator(f"#history tbody tr[data-id='{video_id}']")
    row.wait_for()
    assert "a red ball moving left" in row.text_content() and "completed" in row.text_content()
    api_calls = [r for r in SEEN[page][keyless:] if "/v1/" in r.url]
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {serve_live.KEY}" for r in api_calls)
    assert not any(r.headers.get("authorization") for r in SEEN[page][:keyless])
    assert all(r.url.startswith((live.url, "blob:", "data:")) for r in SEEN[page]), {r.url for r in SEEN[page]}


def test_a_bad_size_shows_the_servers_message(page, live):
    enter_key(page)
    fill(page, prompt="a square", size="65x64", steps="2", frames="4")
    with live.http() as http:
        expected = http.post("/v1/videos", json={"prompt": "a square", "model": "latte-shapes", "size": "65x64",
                                                 "steps": 2, "frames": 4}).json()["error"]["message"]
    assert expected.startswith("size 65x64 is not supported")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#error").text_content() == expected
    assert page.locator("#current").is_hidden()  # nothing was queued


def test_a_wrong_key_shows_the_servers_message_and_a_past_video_plays_from_the_history(page, live):
    page.wait_for_selector("#key-row:not([hidden])")
    page.fill("#api-key", "wrong")
    page.click("#key-save")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#error").text_content().startswith("missing or wrong API key")
    with live.http() as http:
        made = http.post("/v1/videos", json={"prompt": "from the history", "steps": 2, "frames": 4}).json()["id"]
    serve_live.wait_for(lambda: live.http().get(f"/v1/videos/{made}").json()["status"] == "completed")
    enter_key(page)
    page.click("#refresh")
    page.locator(f"#history tbody tr[data-id='{made}']").click()
    page.wait_for_function("() => document.getElementById('player').readyState >= 2", timeout=30000)
    assert page.locator("#current-id").text_content() == made
