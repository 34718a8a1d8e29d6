"""Docker HEALTHCHECK for the sigmoid-edge daemon: no broker, no model load, standard library only.

Healthy means: the daemon process (PID 1 in the container) is ``sigmoid-edge run`` and is
running (not stopped or a zombie), its config file parses, and the model it names
(``SIGMOID_EDGE_MODEL`` overrides the file, as in the daemon) is a readable, non-empty file.
With ``metrics_port`` set (the image's config sets it), the daemon's own ``/healthz`` must
also answer 200: connected to the broker and its worker alive.
Exit status 0 when healthy, 1 with the reason on stdout otherwise (``docker inspect`` shows it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path


def check(pid: int, config: Path) -> str | None:
    """Return why the daemon is unhealthy, or None when it is healthy."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        return f"no process {pid}: {exc}"
    words = [os.path.basename(a.decode(errors="replace")) for a in argv if a]
    if "run" not in words or not any(w.startswith("sigmoid-edge") for w in words):
        return f"process {pid} is not `sigmoid-edge run`: {' '.join(words)!r}"
    # The state is the first field after the parenthesised command name.
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X", "T", "t"):
        return f"process {pid} is in state {state} (zombie, dead or stopped)"
    try:
        settings = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return f"config {config}: {exc}"
    model = Path(os.environ.get("SIGMOID_EDGE_MODEL") or settings.get("model", ""))
    if not model.is_file() or not os.access(model, os.R_OK) or model.stat().st_size == 0:
        return f"model {str(model)!r} is missing, unreadable or empty (mount it read-only)"
    port = os.environ.get("SIGMOID_EDGE_METRICS_PORT") or settings.get("metrics_port") or 0
    if int(port):
        host = os.environ.get("SIGMOID_EDGE_METRICS_HOST") or settings.get("metrics_host") or ""
        return healthz(host, int(port))
    return None


def healthz(host: str, port: int) -> str | None:
    """The daemon's ``/healthz``: None on 200, else its one-line reason."""
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        return None
    except urllib.error.HTTPError as exc:
        return f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}"
    except OSError as exc:
        return f"no answer from {url}: {getattr(exc, 'reason', exc)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("/etc/sigmoid-edge/config.toml"))
    parser.add_argument("--pid", type=int, default=1, help="the daemon's PID (default: 1)")
    args = parser.parse_args(argv)
    problem = check(args.pid, args.config)
    print(problem or "healthy")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
