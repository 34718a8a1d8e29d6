"""``python -m bench``: run every ``bench/bench_*.py`` in turn (``make bench``)."""

import runpy
import sys
from pathlib import Path

here = Path(__file__).parent
scripts = sorted(here.glob("bench_*.py"))
if not scripts:
    sys.exit("no benchmarks in bench/ yet")
for script in scripts:
    print(f"== {script.name}", flush=True)
    runpy.run_path(str(script), run_name="__main__")
