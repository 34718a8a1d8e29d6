"""``make bench``: the runner records each benchmark's output in BENCHMARKS.md."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_runner", ROOT / "bench" / "__main__.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)

DOC = textwrap.dedent("""\
    ## Daemon

    `python bench/bench_daemon.py` measures throughput. Our analysis stays.

    ## Other

    Nothing here.
    """)


def test_block_goes_at_the_end_of_the_section_that_names_the_bench():
    new = runner.update(DOC, "bench_daemon.py", runner.block(
        "bench_daemon.py", "python bench/bench_daemon.py", "today", "here", "| a |"))
    daemon, other = new.split("## Other")
    assert "Our analysis stays." in daemon
    assert daemon.index("Our analysis stays.") < daemon.index("<!-- make bench: bench_daemon.py")
    assert "| a |" in daemon and "Nothing here." in other


def test_block_is_replaced_in_place_and_prose_kept():
    first = runner.update(DOC, "bench_daemon.py", runner.block("bench_daemon.py", "c", "d1",
                                                               "m", "old figures"))
    second = runner.update(first, "bench_daemon.py", runner.block("bench_daemon.py", "c", "d2",
                                                                  "m", "new figures"))
    assert "old figures" not in second and "new figures" in second
    assert second.count("<!-- make bench: bench_daemon.py -->") == 1
    assert "Our analysis stays." in second and "d2" in second


def test_unknown_bench_gets_its_own_section():
    new = runner.update(DOC, "bench_x.py", runner.block("bench_x.py", "c", "d", "m", "fig"))
    assert new.startswith(DOC.rstrip("\n"))
    assert new.rstrip().endswith("<!-- /make bench: bench_x.py -->")
    assert "## `bench/bench_x.py`" in new


def test_markdown_block_or_text():
    out = "progress...\n<!-- begin markdown -->\n| a | b |\n|---|---|\n<!-- end markdown -->\n"
    assert runner.markdown_of(out) == "| a | b |\n|---|---|"
    assert runner.markdown_of("x   1.0\ny   2.0\n") == "```text\nx   1.0\ny   2.0\n```"


def test_machine_line_names_cores_python_and_onnxruntime():
    line = runner.machine()
    assert "cores" in line and "Python 3." in line and "onnxruntime" in line


def test_runner_end_to_end(tmp_path):
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    (bench_dir / "bench_ok.py").write_text(textwrap.dedent("""\
        import sys
        quick = "--quick" in sys.argv
        print("warming up")
        print("<!-- begin markdown -->")
        print("| metric | value |")
        print("|---|---:|")
        print(f"| speed | {1 if quick else 42} |")
        print("<!-- end markdown -->")
        """))
    (bench_dir / "bench_broken.py").write_text("raise SystemExit(3)\n")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("## Broken\n\n<!-- make bench: bench_broken.py -->\nkept\n"
                  "<!-- /make bench: bench_broken.py -->\n")
    cmd = [sys.executable, "-m", "bench", "--dir", str(bench_dir), "--file", str(md)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1  # one benchmark failed
    assert "bench_broken.py FAILED" in proc.stderr
    doc = md.read_text()
    assert "| speed | 42 |" in doc
    assert "Latest `make bench` run: `python bench/bench_ok.py`, 20" in doc
    assert "cores" in doc
    assert "kept" in doc  # the failed benchmark's block is untouched
    # --quick is a smoke run: it records nothing.
    proc = subprocess.run(cmd + ["--quick", "--only", "bench_ok"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "| speed | 1 |" in proc.stdout
    assert md.read_text() == doc
