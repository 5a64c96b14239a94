"""Bulk enrolment against the per-site loop, side by side on one throw-away CA.

- bulk: `Fleet.bulk_plan` + `Fleet.bulk_start` of N sites, waited to the end (tokens; certificates, then
  their encrypted bundles).
- loop now: `Fleet.enroll` / `Fleet.issue` once per site with this tree's code.
- loop before: the same per-site loop with the code of BASELINE_REV (the tree as the fleet-scale issue
  measured it: a step process per token and per certificate), run from `git archive` of that revision.

Usage: bench/bulk_bench.py [--count 1000] [--loop-count 100] [--baseline-rev REV]
The loops run `--loop-count` sites (a step process per site takes minutes for 1,000) and are scaled to
`--count` in the table; each figure is printed with the count it was measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ca import REPO, ThrowawayCA

BASELINE_REV = "6720235"
LOOP = """
import json, sys, time
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.roles import Actor, Role
from pki.settings import load_settings

fleet = Fleet(load_settings())
actor = Actor("bench", Role.OPERATOR, "127.0.0.1")
mode, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
fleet.limits()
start = time.perf_counter()
for i in range(count):
    if mode == "tokens":
        fleet.enroll(actor, f"{prefix}{i:05}", hours=24, broker="mqtt.example.test:8883")
    else:
        fleet.issue(actor, IssueRequest(f"{prefix}{i:05}", Kind.CLIENT, "", 30, "EC P-256"))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""
BULK = """
import json, sys, time
from pki.bulk import Mode
from pki.fleet import Fleet
from pki.roles import Actor, Role
from pki.settings import load_settings

fleet = Fleet(load_settings())
actor = Actor("bench", Role.OPERATOR, "127.0.0.1")
mode, prefix, count = Mode(sys.argv[1]), sys.argv[2], int(sys.argv[3])
text = "site\\n" + "".join(f"{prefix}{i:05}\\n" for i in range(count))
start = time.perf_counter()
planned = fleet.bulk_plan(actor, text, source_name="bench", mode=mode, lifetime=24 if mode is Mode.TOKENS else 30,
                          broker="mqtt.example.test:8883")
job_id = fleet.bulk_start(actor, planned)
fleet.bulk.wait(job_id)
ran = time.perf_counter() - start
status = fleet.bulk.status(job_id)
done = sum(1 for r in status.results.values() if r.outcome.value == "done")
assert status.finished and done == count, status.counts
if mode is Mode.TOKENS:
    fleet.bulk_commands(actor, job_id)
else:
    fleet.bulk_bundles(actor, job_id)
print(json.dumps({"job": ran, "with_downloads": time.perf_counter() - start}))
"""


def run(code: str, tree: Path, env: dict[str, str], *args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env | {"PYTHONPATH": str(tree / "streamlit")}, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"failed ({tree}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--loop-count", type=int, default=100)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulk-bench-") as tmp:
        base = Path(tmp)
        old_tree = base / "baseline-tree"
        old_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline_rev, "streamlit"],
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        ca = ThrowawayCA(base / "pki")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("STEP", "PKI_"))} | ca.env
            env["PKI_STEP_TIMEOUT"] = "60"
            figures: dict[str, dict[str, float]] = {}
            for mode in ("tokens", "certificates"):
                figures[f"bulk {mode}"] = run(BULK, REPO, env, mode, f"bulk-{mode[0]}-", str(args.count))
                figures[f"loop now {mode}"] = run(LOOP, REPO, env, mode, f"now-{mode[0]}-", str(args.loop_count))
                figures[f"loop before {mode}"] = run(LOOP, old_tree, env, mode, f"old-{mode[0]}-", str(args.loop_count))
        finally:
            ca.stop()
    scale = args.count / args.loop_count
    print(f"\n{args.count} sites, 2 cores (loops measured on {args.loop_count} sites and scaled)\n")
    print(f"| {args.count} sites | bulk job | with downloads | loop now | loop at {args.baseline_rev} | "
          "bulk vs loop before |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for mode in ("tokens", "certificates"):
        bulk = figures[f"bulk {mode}"]
        now = figures[f"loop now {mode}"]["seconds"] * scale
        before = figures[f"loop before {mode}"]["seconds"] * scale
        print(
            f"| {mode} | {bulk['job']:.1f} s | {bulk['with_downloads']:.1f} s | {now:.1f} s | {before:.1f} s | "
            f"{before / bulk['with_downloads']:.1f}x |"
        )


if __name__ == "__main__":
    main()
