"""``python -m bench`` (``make bench``): run every ``bench/bench_*.py`` and record its figures.

Each benchmark runs as ``python bench/bench_x.py`` in its own process; what it prints on
stdout goes to the terminal and into ``BENCHMARKS.md``, in a block this runner owns::

    <!-- make bench: bench_x.py -->
    Latest `make bench` run: `python bench/bench_x.py`, <date>, <machine>.
    ...the benchmark's output...
    <!-- /make bench: bench_x.py -->

- If the block exists it is replaced; the prose around it (analysis, older runs) is kept.
- Otherwise the block goes at the end of the ``## `` section that mentions
  ``bench/bench_x.py``, or, if none does, into a new section at the end of the file.
- A benchmark that prints a ``<!-- begin markdown -->`` ... ``<!-- end markdown -->`` block
  gets exactly that markdown recorded (tables render); otherwise its whole stdout is
  recorded as a ``text`` code block.
- A benchmark that fails is reported and its block is left as it was.

Options: ``--quick`` passes ``--quick`` to every benchmark and records nothing (a smoke run);
``--only NAME`` runs matching benchmarks only; ``--no-write`` records nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from edge.atomic import write_file

ROOT = Path(__file__).resolve().parent.parent
BEGIN_MD = "<!-- begin markdown -->"
END_MD = "<!-- end markdown -->"


def machine() -> str:
    """The machine a figure was measured on, in one line."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = " (" + line.split(":", 1)[1].strip() + ")"
                break
    except OSError:
        pass
    versions = []
    for pkg in ("numpy", "onnxruntime", "paho-mqtt"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:  # e.g. onnxruntime on 32-bit ARM: numpy runtime
            versions.append(f"no {pkg}")
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at start"
    return (f"{os.cpu_count()} cores {platform.machine()}{cpu}, Python "
            f"{platform.python_version()}, {', '.join(versions)}{load}")


def markdown_of(stdout: str) -> str:
    """What to record for a benchmark's stdout (see the module docstring)."""
    if BEGIN_MD in stdout and END_MD in stdout:
        body = stdout.split(BEGIN_MD, 1)[1].split(END_MD, 1)[0]
        return body.strip("\n")
    text = stdout.strip("\n").replace("```", "'''")
    return f"```text\n{text}\n```"


def block(name: str, command: str, when: str, where: str, body: str) -> str:
    return (f"<!-- make bench: {name} -->\n"
            f"Latest `make bench` run: `{command}`, {when}, {where}.\n\n"
            f"{body}\n"
            f"<!-- /make bench: {name} -->")


def update(doc: str, name: str, new_block: str) -> str:
    """``doc`` with the block of benchmark ``name`` replaced or inserted."""
    pattern = re.compile(rf"<!-- make bench: {re.escape(name)} -->.*?"
                         rf"<!-- /make bench: {re.escape(name)} -->", re.S)
    if pattern.search(doc):
        return pattern.sub(lambda _: new_block, doc, count=1)
    # The ## section that talks about this benchmark: the block goes at its end.
    lines = doc.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        if f"bench/{name}" in "".join(lines[start:end]):
            head = "".join(lines[:end]).rstrip("\n")
            tail = "".join(lines[end:])
            return head + "\n\n" + new_block + "\n" + ("\n" + tail if tail else "")
    title = f"## `bench/{name}`"
    return doc.rstrip("\n") + ("\n\n" if doc.strip() else "") + f"{title}\n\n{new_block}\n"


def run(script: Path, extra: list[str]) -> tuple[int, str, float]:
    """Run one benchmark, echoing its stdout while keeping a copy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    out = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        out.append(line)
    return proc.wait(), "".join(out), time.monotonic() - t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="pass --quick to every benchmark; record nothing")
    parser.add_argument("--only", metavar="NAME", help="run benchmarks whose name contains NAME")
    parser.add_argument("--no-write", action="store_true", help="record nothing")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="where figures are recorded (default BENCHMARKS.md)")
    args = parser.parse_args(argv)
    scripts = sorted(args.dir.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if args.only in s.name]
    if not scripts:
        print(f"no benchmarks {'matching ' + args.only if args.only else ''} in {args.dir}",
              file=sys.stderr)
        return 1
    write = not (args.quick or args.no_write)
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        where = machine()
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        extra = ["--quick"] if args.quick else []
        code, stdout, seconds = run(script, extra)
        if code != 0:
            print(f"== {script.name} FAILED (exit {code}); its figures are not recorded",
                  file=sys.stderr)
            failed.append(script.name)
            continue
        print(f"== {script.name} took {seconds:.0f} s", flush=True)
        if write:
            command = f"python bench/{script.name}"
            doc = args.file.read_text() if args.file.exists() else ""
            new = update(doc, script.name, block(script.name, command, when, where,
                                                 markdown_of(stdout)))
            # Atomic: a failed run never leaves half a file.
            write_file(args.file, new.encode(), mode=0o644)
    if write:
        print(f"recorded {len(scripts) - len(failed)} benchmark(s) in {args.file}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
