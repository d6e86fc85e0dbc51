"""UI tests: a real stack (Mosquitto, ingest + API server, edge with simulated runners) and headless Debian
Chromium driven by Playwright (never `playwright install`: the system browser at /usr/bin/chromium)."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("RUNFORM_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--autoplay-policy=no-user-gesture-required"]
# Screenshots go to docs/img only when asked (`make screenshots`: RUNFORM_SCREENSHOTS=docs/img); a plain test run
# must not rewrite tracked files.
DOCS_IMG = Path(os.environ["RUNFORM_SCREENSHOTS"]) if os.environ.get("RUNFORM_SCREENSHOTS") else \
    Path(tempfile.mkdtemp(prefix="runform-screens-"))
N_RUNNERS = 10
RATE_HZ = 200.0  # 10 runners on 2 shared cores: 200 Hz keeps the edge far from saturation
RESULTS: dict = {}  # measured numbers, printed at the end of the session


def _need():
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("playwright (Python) is not installed: pip install -e '.[test]'")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; make sysdeps)")
    from runform.server.broker import mosquitto_available
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


class StackThread:
    """A DemoStack in its own event loop thread."""

    def __init__(self, workdir: Path, runners):
        from runform.server._cmd_demo import DemoStack
        self.stack = DemoStack(workdir, runners=runners, source="sim", sampling_rate_hz=RATE_HZ,
                               extra_therapists=("pt2",), log=lambda *a: None)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.started_s = time.monotonic()
        self.call(self.stack.start(), 120)
        self.started_s = time.monotonic()  # edge started: runners begin streaming now

    def call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        try:
            self.call(self.stack.stop(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    _need()
    from runform.server._cmd_demo import DEFAULT_RUNNERS, DemoRunner
    runners = tuple(DEFAULT_RUNNERS) + tuple(
        DemoRunner(f"r{i:02d}", cadence_spm=160.0 + 2 * i, target_cadence_spm=170.0, seed=10 + i,
                   publish_raw=False)  # raw on demand (when a therapist opens the runner): a quarter less CPU
        for i in range(3, N_RUNNERS + 1))
    st = StackThread(tmp_path_factory.mktemp("demo"), runners)
    # stack-level time to first live data: edge start -> first step detected for every runner
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if all(p.counters.get("steps", 0) > 0 for p in st.stack.edge.pipelines.values()):
            RESULTS["edge_first_steps_all_runners_s"] = round(time.monotonic() - st.started_s, 2)
            break
        time.sleep(0.1)
    yield st
    st.stop()


@pytest.fixture(scope="session")
def browser():
    _need()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                              args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


class PageErrors:
    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)


@pytest.fixture
def new_page(browser):
    contexts = []

    def make(viewport=(1280, 900)):
        ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        contexts.append(ctx)
        page = ctx.new_page()
        page.errors = PageErrors(page)
        return page
    yield make
    for c in contexts:
        c.close()


def login(page, url, user, password=None):
    from runform.server._cmd_demo import DEMO_PASSWORD
    page.goto(url)
    page.wait_for_selector("#login-user", state="visible", timeout=10000)
    page.fill("#login-user", user)
    page.fill("#login-pass", password or DEMO_PASSWORD)
    page.click("#login-submit")
    try:
        page.wait_for_function("() => window.rfReady === true || !!document.body.dataset.denied", timeout=20000)
    except Exception as exc:
        raise AssertionError(f"{url}: page not ready; login error {page.inner_text('#login-error')!r}; "
                             f"page errors {page.errors.errors}") from exc


def pytest_terminal_summary(terminalreporter):
    if RESULTS:
        terminalreporter.write_line("runform UI measurements: " + ", ".join(f"{k}={v}" for k, v in RESULTS.items()))


# ------------------------------------------------------------------ helpers for the tests
_TOKENS: dict = {}  # (server url, user) -> bearer token: logins are rate limited per IP (burst 10, 1 per 5 s)


def api_as(stack, user, method, path, body=None):
    """One API request with a bearer token of `user` (demo password, one login per user); returns (status, json)."""
    import json
    import urllib.error
    import urllib.request

    from runform.server._cmd_demo import DEMO_PASSWORD

    def req(m, p, b=None, token=None):
        r = urllib.request.Request(stack.stack.url + "/api/v1" + p, method=m,
                                   data=None if b is None else json.dumps(b).encode(),
                                   headers={"Content-Type": "application/json",
                                            **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(r, timeout=15) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
    key = (stack.stack.url, user)
    if key not in _TOKENS:
        st, login_ = req("POST", "/auth/login", {"username": user, "password": DEMO_PASSWORD, "mode": "bearer"})
        assert st == 200, login_
        _TOKENS[key] = login_["token"]
    return req(method, path, body, _TOKENS[key])


def publish_as_edge(stack, topic, obj):
    """Publish one message through the real broker with the edge's MQTT credentials (what the edge would send)."""
    import json

    import paho.mqtt.client as mqtt

    from runform.server._cmd_demo import EDGE_MQTT_USER
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rf-ui-test-{time.monotonic_ns()}",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(EDGE_MQTT_USER, stack.stack._service_pw[EDGE_MQTT_USER])
    c.connect("127.0.0.1", stack.stack.mqtt_port_)
    c.loop_start()
    try:
        info = c.publish(topic, json.dumps(obj).encode(), qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), f"publish to {topic} not acknowledged"
    finally:
        c.disconnect()
        c.loop_stop()


class LiveProxy:
    """Playwright between the page and the API WebSocket (/api/v1/live): forwards every frame; `hold = True`
    stalls the server -> page direction (the frames are kept, as a stalled network would), `release()` delivers
    them late, in order; `hold_if(frame) -> bool` holds only the frames it selects (the others pass);
    `rewrite(frame) -> frame` edits server frames in flight. `forwarded` lists every frame delivered to the page."""

    def __init__(self, page, rewrite=None, hold_if=None):
        import re
        self.hold = False
        self.hold_if = hold_if
        self.held: list = []
        self.forwarded: list = []
        self.rewrite = rewrite
        self.connections = 0
        page.route_web_socket(re.compile(r".*/api/v1/live.*"), self._route)

    def _route(self, ws):
        server = ws.connect_to_server()
        self.connections += 1

        def from_server(m):
            if self.rewrite is not None:
                m = self.rewrite(m)
            if self.hold or (self.hold_if is not None and self.hold_if(m)):
                self.held.append((ws, m))
            else:
                ws.send(m)
                self.forwarded.append(m)
        server.on_message(from_server)
        ws.on_message(lambda m: server.send(m))

    def release(self):
        self.hold = False
        self.hold_if = None
        held, self.held = self.held, []
        for ws, m in held:
            ws.send(m)
            self.forwarded.append(m)


def wait_until(page, cond, timeout_s=20.0, what="condition"):
    """Poll a Python-side condition while letting Playwright dispatch events (WebSocket route callbacks)."""
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(50)
