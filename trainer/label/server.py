"""The labelling page's server: the standard library's ``http.server`` and a JSON API.

- ``GET /``: the page (:mod:`trainer.label.page`);
- ``GET /api/next``: progress, the labels offered, and the next window to label (the
  model's hard cases first, least confident first), or ``null`` when all are done;
- ``GET /plot/<id>.png``: that window's channels over time (:mod:`trainer.label.plot`);
- ``POST /api/label`` ``{"id": ..., "label": "walking"}`` (``null`` skips): saved at
  once (``labels.json``, atomic), answered with the next state.

It binds to 127.0.0.1 unless told otherwise: the page writes files and has no login.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from trainer.captures import CaptureStore, Labels, queue_order
from trainer.label.page import PAGE
from trainer.label.plot import window_png

log = logging.getLogger(__name__)

MAX_LABEL = 64
_BAD_LABEL = re.compile(r"[\x00-\x1f\x7f]")
_PLOT = re.compile(r"^/plot/([0-9a-f]{8,64})\.png$")
PLOT_CACHE = 64


class LabelApp:
    """The state behind the page: a capture directory and its labels.

    Parameters
    ----------
    root : path
        A directory from ``sigmoid-train collect``.
    labels : list of str, optional
        Labels to offer first (``--labels``); the models' labels found in the captures and
        labels added on the page follow.
    """

    def __init__(self, root, labels=None):
        self.store = CaptureStore(root)
        self.labels = Labels(Path(root))
        self.labels.offer(labels or [])
        self._offer_model_labels()
        self._plots: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _offer_model_labels(self) -> None:
        names: dict[str, None] = {}  # the models' label order, first seen first
        for e in self.store.entries.values():
            for name in e.get("model_labels") or [e.get("label")]:
                if isinstance(name, str):
                    names[name] = None
        self.labels.offer(names)

    def state(self) -> dict:
        """Progress, offered labels and the next window (``None`` when none is left)."""
        if self.store.reload():  # `collect` may still be adding captures
            self._offer_model_labels()
        given = self.labels.labels
        todo = [e for cid, e in self.store.entries.items() if cid not in given]
        skipped = sum(1 for cid, v in given.items() if v is None and cid in self.store)
        done = sum(1 for cid, v in given.items() if v is not None and cid in self.store)
        nxt = queue_order(todo)[0] if todo else None
        window = None
        if nxt is not None:
            doc = self.store.window(nxt["id"])
            window = {k: doc.get(k) for k in (
                "device", "node", "window_start", "window_end", "label", "confidence",
                "probabilities", "reason", "anomaly_score", "anomaly", "model", "channels")}
            window["id"] = nxt["id"]
        return {"labels": list(self.labels.label_set), "window": window,
                "progress": {"labelled": done, "skipped": skipped, "total": len(self.store),
                             "left": len(todo)}}

    def set_label(self, cid: str, label) -> dict:
        """Save one label (``None`` = skip); raises ValueError on a bad id or label."""
        if cid not in self.store:
            raise ValueError(f"unknown capture id {cid!r}")
        if label is not None:
            if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL \
                    or _BAD_LABEL.search(label):
                raise ValueError(f"a label is 1 to {MAX_LABEL} printable characters, "
                                 f"got {label!r}")
            label = label.strip()
        self.labels.set(cid, label)
        return self.state()

    def plot(self, cid: str) -> bytes:
        with self._lock:
            png = self._plots.get(cid)
        if png is None:
            png = window_png(self.store.window(cid))
            with self._lock:
                self._plots[cid] = png
                if len(self._plots) > PLOT_CACHE:
                    self._plots.popitem(last=False)
        return png


class Handler(BaseHTTPRequestHandler):
    """HTTP glue: every answer is JSON, HTML or PNG; errors are JSON with a message."""

    server_version = "sigmoid-train-label"

    def __init__(self, *args, app: LabelApp, **kwargs):
        self.app = app
        super().__init__(*args, **kwargs)

    def log_message(self, fmt, *args):  # quiet: one debug line per request
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status=HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/next":
            self._json(self.app.state())
        elif (m := _PLOT.match(path)) is not None:
            try:
                self._send(HTTPStatus.OK, self.app.plot(m.group(1)), "image/png")
            except KeyError:
                self._json({"error": "no such capture"}, HTTPStatus.NOT_FOUND)
        else:
            self._json({"error": f"no page {path}"}, HTTPStatus.NOT_FOUND)

    def do_POST(self):  # noqa: N802
        if self.path != "/api/label":
            self._json({"error": f"no page {self.path}"}, HTTPStatus.NOT_FOUND)
            return
        # JSON only: a plain HTML form on another site cannot send this content type.
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            self._json({"error": "send application/json"}, HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(min(length, 65536)))
            self._json(self.app.set_label(str(body["id"]), body.get("label")))
        except (ValueError, KeyError, TypeError) as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)


def make_server(app: LabelApp, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server for ``app`` bound to ``host:port`` (port 0: any free one)."""
    server = ThreadingHTTPServer((host, port), partial(Handler, app=app))
    server.daemon_threads = True
    return server


def serve(root, *, host: str = "127.0.0.1", port: int = 8765, labels=None) -> None:
    """Serve the page until interrupted (Ctrl-C)."""
    app = LabelApp(root, labels)
    server = make_server(app, host, port)
    state = app.state()["progress"]
    print(f"labelling {root}: {state['labelled']} of {state['total']} labelled; open "
          f"http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
