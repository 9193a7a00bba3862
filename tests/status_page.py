#!/usr/bin/python3
"""Drives headless Chromium (Debian's `chromium`) over the DevTools protocol
for tests/e2e_status_page.rs: opens URL, then answers one command per stdin
line with one JSON line on stdout.

    status_page.py URL DEBUG_PORT PROFILE_DIR

    rows N TIMEOUT_MS            wait for N backend rows: {"ok", "rows": [[service, backend, health]...]}
    health ADDRESS STATE TIMEOUT_MS   wait for that backend's row to show STATE: {"ok", "ms"}
    busy TIMEOUT_MS              wait for a backend row with packets/s above 0: {"ok", "ms"}
    screenshot PATH              a PNG of the page
    errors                       console errors, uncaught exceptions and failed loads so far

Chromium is started here and killed when stdin closes.
"""
import base64
import json
import subprocess
import sys
import time
import urllib.request

import websocket

url, port, profile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
browser = subprocess.Popen(
    ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
     "--no-first-run", "--no-default-browser-check", "--disable-extensions",
     f"--remote-debugging-port={port}", "--remote-allow-origins=*", f"--user-data-dir={profile}",
     "--window-size=1280,900", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=open(f"{profile}.log", "w"))


def target():
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("chromium did not open its DevTools port")


ws = websocket.create_connection(target(), timeout=30)
next_id = 0
errors = []


def note(event):
    m, p = event.get("method"), event.get("params", {})
    if m == "Runtime.exceptionThrown":
        d = p["exceptionDetails"]
        errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
    elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        errors.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
    elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
        errors.append("log: " + p["entry"]["text"] + " " + p["entry"].get("url", ""))


def send(method, **params):
    global next_id
    next_id += 1
    ws.send(json.dumps({"id": next_id, "method": method, "params": params}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == next_id:
            if "error" in msg:
                raise RuntimeError(f"{method}: {msg['error']}")
            return msg.get("result", {})
        note(msg)


def evaluate(expr):
    r = send("Runtime.evaluate", expression=expr, returnByValue=True)
    return r.get("result", {}).get("value")


ROWS = "Array.from(document.querySelectorAll('tr.backend')).map(r => [r.dataset.service, r.dataset.backend, r.dataset.health])"

send("Runtime.enable")
send("Log.enable")
send("Page.enable")
send("Page.navigate", url=url)


def wait(cond, timeout_ms):
    start = time.time()
    while True:
        v = evaluate(cond)
        if v:
            return True, int((time.time() - start) * 1000)
        if (time.time() - start) * 1000 > timeout_ms:
            return False, int((time.time() - start) * 1000)
        time.sleep(0.02)


def reply(obj):
    print(json.dumps(obj), flush=True)


try:
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "rows":
            ok, ms = wait(f"document.querySelectorAll('tr.backend').length === {int(cmd[1])}", int(cmd[2]))
            reply({"ok": ok, "ms": ms, "rows": evaluate(ROWS)})
        elif cmd[0] == "health":
            addr, state = json.dumps(cmd[1]), json.dumps(cmd[2])
            cond = f"Array.from(document.querySelectorAll('tr.backend')).some(r => r.dataset.backend === {addr} && r.dataset.health === {state})"
            ok, ms = wait(cond, int(cmd[3]))
            reply({"ok": ok, "ms": ms, "rows": evaluate(ROWS)})
        elif cmd[0] == "busy":
            cond = "Array.from(document.querySelectorAll('tr.backend')).some(r => parseFloat(r.dataset.pps) > 0)"
            ok, ms = wait(cond, int(cmd[1]))
            reply({"ok": ok, "ms": ms})
        elif cmd[0] == "screenshot":
            png = send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
            with open(cmd[1], "wb") as f:
                f.write(base64.b64decode(png))
            reply({"ok": True})
        elif cmd[0] == "errors":
            send("Runtime.evaluate", expression="1")  # collects the events queued so far
            reply({"ok": True, "errors": errors, "text": evaluate("document.body.innerText")})
        else:
            reply({"ok": False, "error": f"unknown command {cmd[0]}"})
finally:
    ws.close()
    browser.kill()
    browser.wait()
