"""A stand-in for `keel serve agent`, run as a script by the supervisor in tests.

`python fake_replica.py --host H --port P`: answers /health, and /ready with the
version from KEEL_AGENT__VERSION (503 once draining); POST /turn?s=SECONDS is a turn
that takes that long. SIGTERM drains: /ready answers 503, turns in flight finish, then
it exits 0. It writes its KEEL_* environment to $FAKE_RECORD_DIR/<replica id>.json,
and exits 2 at once when KEEL_AGENT__ENTRYPOINT is `broken:agent`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

args = sys.argv[1:]
host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
version = os.environ.get("KEEL_AGENT__VERSION", "v1")
replica = os.environ.get("KEEL_SERVER__REPLICA_ID", "replica")
record_dir = os.environ.get("FAKE_RECORD_DIR")
if record_dir:
    keel = {k: v for k, v in os.environ.items() if k.startswith("KEEL_")}
    Path(record_dir, f"{replica}.json").write_text(json.dumps(keel))
if os.environ.get("KEEL_AGENT__ENTRYPOINT") == "broken:agent":
    print("boom: cannot import broken:agent", flush=True)
    sys.exit(2)

state = {"draining": False, "in_flight": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/ready" and state["draining"]:
            self._answer(503, {"error": {"code": "draining", "message": "draining"}})
        elif self.path == "/ready":
            self._answer(200, {"status": "ready", "version": version})
        else:
            self._answer(200, {"status": "ok", "version": version})

    def do_POST(self) -> None:
        if state["draining"]:
            self._answer(503, {"error": {"code": "draining", "message": "draining"}})
            return
        seconds = float(parse_qs(urlsplit(self.path).query).get("s", ["0"])[0])
        with lock:
            state["in_flight"] += 1
        time.sleep(seconds)
        try:
            self._answer(200, {"reply": "done", "version": version, "replica": replica})
        finally:
            with lock:
                state["in_flight"] -= 1

    def log_message(self, *args: object) -> None:
        pass


server = ThreadingHTTPServer((host, port), Handler)


def drain() -> None:
    while True:
        with lock:
            if state["in_flight"] == 0:
                break
        time.sleep(0.02)
    os._exit(0)


def on_term(signum: int, frame: object) -> None:
    state["draining"] = True
    threading.Thread(target=drain, daemon=True).start()


signal.signal(signal.SIGTERM, on_term)
print(f"{replica} {version} listening on {port}", flush=True)
server.serve_forever()
