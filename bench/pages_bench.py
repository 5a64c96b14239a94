"""Page timings with a large fleet: app-pki next to a plain Streamlit baseline (bench/baseline_app.py), in
one run on one throw-away CA.

Sets up the CA with the project's scripts (loopback), files N certificates its intermediate signed into
certs/, then measures each app in a fresh process through Streamlit's AppTest (the script runs as for a
browser session, without the browser): Dashboard first load, Dashboard reload, View Certificates load, a
search that finds 10 rows (each the median of --runs), and the peak memory of the process. app-pki runs
four times: from nothing, after a restart of the GUI process (with the records it kept), after a restart
when a site renewed while it was down (the CA's journal grew), and after a restart when one certificate
was filed in certs/ while it was down (the kept records are checked against every folder). Usage (after
`make test` built the tools):

    PATH=$PWD/.tools/bin:$PATH .venv/bin/python bench/pages_bench.py [--count 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "streamlit"), str(REPO / "bench")]

from bench_ca import ThrowawayCA  # noqa: E402

SEARCH = "site-00001"
"""Matches site-000010 to site-000019: ten rows."""


def timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def measure(target: str, runs: int) -> tuple[Any, dict[str, object]]:
    """In this process: the pages of `target` (app-pki or baseline), timings in seconds."""
    from streamlit.testing.v1 import AppTest

    if target == "baseline":
        at = AppTest.from_file(str(REPO / "bench" / "baseline_app.py"), default_timeout=900)
        first = timed(at.run)
        reload = [timed(at.run) for _ in range(runs)]

        def to_view() -> None:
            at.sidebar.radio[0].set_value("View Certificates").run()

    else:
        at = AppTest.from_file(str(REPO / "streamlit" / "app.py"), default_timeout=900)
        first = timed(at.run)
        reload = [timed(at.run) for _ in range(runs)]

        def to_view() -> None:
            at.switch_page("views/certificates.py").run()

    assert not at.exception, at.exception
    view_first = timed(to_view)
    view = [timed(at.run) for _ in range(runs)]

    def search(text: str) -> None:
        at.text_input[0].input(text).run()

    searches = []
    for i in range(runs):
        searches.append(timed(lambda i=i: search(SEARCH if i % 2 == 0 else f"{SEARCH}x")))
    search(SEARCH)
    shown = len(at.dataframe[-1].value)
    assert not at.exception, at.exception
    return at, {
        "dashboard first load": first,
        "dashboard reload": statistics.median(reload),
        "view first load": view_first,
        "view reload": statistics.median(view),
        "search (10 rows)": statistics.median(searches),
        "rows found": shown,
        "peak memory MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_a_while(at: Any, seconds: float = 300) -> None:
    """Leave the GUI as one that ran a while: a page after the first sweep's time (which starts it), then
    until the cache file holds the records and the snapshot of a look at certs/ long after its last change."""
    from pki import inventory

    time.sleep(inventory.SWEEP_SECONDS + 5)
    at.run()
    kept = Path(os.environ["PKI_DATA_DIR"]) / "cache" / "inventory.bin"
    deadline = time.monotonic() + seconds
    while inventory._load_cache(kept)[1] is None and time.monotonic() < deadline:
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--measure", choices=["app-pki", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kept_before = (Path(os.environ["PKI_DATA_DIR"]) / "cache" / "inventory.bin").exists()
        at, figures = measure(args.measure, args.runs)
        print(json.dumps(figures), flush=True)
        if args.measure == "app-pki" and not kept_before:
            run_a_while(at)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ca = ThrowawayCA(Path(tmp))
        try:
            start = time.perf_counter()
            ca.fill(args.count)
            print(f"{args.count} certificates filed in {time.perf_counter() - start:.1f} s")
            results = {}
            runs = ["baseline", "app-pki", "after a restart", "restart, a site renewed", "restart, certs/ changed"]
            for target, name in zip(["baseline", *["app-pki"] * 4], runs, strict=True):
                if name.endswith("renewed"):
                    ca.fill(1, journal=True)
                if name.endswith("changed"):
                    ca.fill(1, prefix="filed-while-down")
                env = os.environ | ca.env | {"BENCH_CERTS": ca.env["PKI_CERTS_DIR"]}
                done = subprocess.run(
                    [sys.executable, __file__, "--measure", target, "--runs", str(args.runs)],
                    env=env, capture_output=True, text=True, check=False,
                )  # fmt: skip
                if done.returncode:
                    raise SystemExit(f"{target} failed:\n{done.stderr[-3000:]}")
                results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            ca.stop()
    names = list(results["baseline"])
    print(f"{'':28}" + "".join(f"{name:>25}" for name in results))
    for name in names:
        cells = []
        for result in results.values():
            value = result[name]
            cells.append(f"{value:>25.3f}" if isinstance(value, float) else f"{value:>25}")
        print(f"{name:28}" + "".join(cells))


if __name__ == "__main__":
    main()
