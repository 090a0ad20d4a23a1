"""The stats page's admin controls, used in headless Chromium against a real
lbcore: select servers, apply MAINT / DRAIN / weight / READY / kill
sessions, behind basic auth, and check where requests then go.

Chromium is driven through its DevTools protocol (a websocket), as a
person's clicks would: the checkbox is clicked, the action chosen, the
form submitted, and the page that comes back is read.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

from tests.integration.test_stats_browser import find_chromium, png_colours
from tests.support import BackendProcess, LbcoreProcess, free_port, http_config

websocket = pytest.importorskip("websocket", reason="websocket-client is in the test extra")

AUTH = ("ops", "pa55")


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="lbcore-cdp-")
        port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
             "--hide-scrollbars", "--window-size=1400,900", f"--remote-debugging-port={port}",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, HOME=self.profile))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as resp:
                    pages = [t for t in json.load(resp) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("chromium's DevTools endpoint did not come up")
            time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.ids = 0
        self.call("Page.enable")

    def call(self, method: str, **params) -> dict:
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_event(self, name: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if json.loads(self.ws.recv()).get("method") == name:
                return
        raise TimeoutError(name)

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def act(self, backend: str, servers: list[str], action: str, weight: str = "") -> str:
        """Tick `servers`, pick `action`, press Apply: the banner of the page that comes back."""
        script = "".join(
            f"document.querySelector('input[name=s][value=\"{s}\"][form=\"admin-{backend}\"]').click();"
            for s in servers)
        script += (f"document.querySelector('#admin-{backend} select').value = '{action}';"
                   f"document.querySelector('#admin-{backend} input[name=weight]').value = '{weight}';"
                   f"document.querySelector('#admin-{backend} button').click();")
        self.eval(script)
        self.wait_event("Page.loadEventFired")
        return self.eval("(document.getElementById('action-status') || {}).textContent")

    def row(self, server: str) -> tuple[str, list[str]]:
        return tuple(self.eval(
            f"(r => [r.className, [...r.cells].map(c => c.textContent)])"
            f"(document.querySelector('tr.server[data-server=\"{server}\"]'))"))

    def screenshot(self, path: str) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


def served_by(port: int, requests: int = 12) -> set:
    names = set()
    for _ in range(requests):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/echo")
        resp = conn.getresponse()
        resp.read()
        names.add(resp.getheader("X-Server"))
        conn.close()
    return names


@pytest.fixture
def chromium_binary():
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (test.sh installs it)")
    return binary


def test_operator_acts_from_the_page(chromium_binary, tmp_path):
    servers = [BackendProcess(f"s{i}").start() for i in (1, 2)]
    port, stats_port = free_port(), free_port()
    config = http_config([s.address for s in servers], port)
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}", "admin": True, "refresh": "30s",
                       "auth": {"user": AUTH[0], "password": AUTH[1]}}
    lb = LbcoreProcess(config).start()
    browser = Browser(chromium_binary)
    try:
        assert served_by(port) == {"s1", "s2"}
        page = f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{stats_port}/"
        browser.open(page)
        assert browser.eval("document.title") == "lbcore statistics"
        assert browser.eval("!!document.getElementById('process')")

        assert browser.act("pool", ["s1"], "maint") == "Action processed successfully."
        assert browser.row("s1")[0] == "server maintain" and browser.row("s1")[1][1] == "MAINT"
        assert served_by(port) == {"s2"}

        assert browser.act("pool", ["s1"], "ready") == "Action processed successfully."
        assert browser.act("pool", ["s2"], "drain") == "Action processed successfully."
        assert browser.row("s2")[1][1] == "DRAIN"
        assert served_by(port) == {"s1"}

        assert browser.act("pool", ["s1", "s2"], "ready") == "Action processed successfully."
        assert browser.act("pool", ["s2"], "weight", "0") == "Action processed successfully."
        assert browser.row("s2")[1][4] == "0"
        assert served_by(port) == {"s1"}
        assert browser.act("pool", ["s2"], "weight", "abc") == \
            "Action not processed because of invalid parameters."
        assert browser.act("pool", ["s2"], "weight", "1") == "Action processed successfully."
        assert served_by(port) == {"s1", "s2"}
        assert browser.act("pool", ["s1"], "shutdown") == "Action processed successfully."

        # The switches: hide DOWN/MAINT servers, stop the refresh.
        browser.act("pool", ["s2"], "maint")
        browser.open(page + ";up;norefresh")
        assert browser.eval("document.querySelector('tr.server[data-server=\"s2\"]')") is None
        assert browser.eval("document.querySelector('meta[http-equiv=refresh]')") is None
        browser.open(page)
        shot = browser.screenshot(str(tmp_path / "stats-admin.png"))
        keep = os.environ.get("LBCORE_KEEP_SCREENSHOT")
        if keep:
            shutil.copy(tmp_path / "stats-admin.png", keep)
        colours = png_colours(shot)
        assert (0xC0, 0xFF, 0xC0) in colours and (0xC0, 0x78, 0x20) in colours  # UP, MAINT rows

        logs = lb.logs()
        assert "stats admin: pool/s1 {\"state\": \"maint\"} from 127.0.0.1 (stats page)" in logs
        assert "stats admin: pool/s1 {\"sessions\": \"shut down\"}" in logs
    finally:
        browser.close()
        lb.stop()
        for s in servers:
            s.stop()


def test_page_actions_need_auth_and_same_origin():
    servers = [BackendProcess("s1").start()]
    port, stats_port = free_port(), free_port()
    config = http_config([s.address for s in servers], port)
    config["stats"] = {"bind": f"127.0.0.1:{stats_port}", "admin": True,
                       "auth": {"user": AUTH[0], "password": AUTH[1]}}
    lb = LbcoreProcess(config).start()
    try:
        body = "b=pool&action=maint&s=s1"
        auth = "Basic " + base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
        form = {"Content-Type": "application/x-www-form-urlencoded"}

        def post(headers):
            conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
            conn.request("POST", "/", body=body, headers={**form, **headers})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status, resp.getheader("Location")

        assert post({})[0] == 401
        assert post({"Authorization": auth, "Origin": "http://evil.example"})[0] == 403
        assert served_by(port, 3) == {"s1"}
        assert post({"Authorization": auth}) == (303, "/;st=DONE")
        assert served_by(port, 1) == {None}  # s1 in MAINT: lbcore answers 503 itself
    finally:
        lb.stop()
        servers[0].stop()
