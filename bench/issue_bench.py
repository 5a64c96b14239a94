"""What one issuance through the GUI's core costs next to the raw step CLI call, on a real step-ca.

Sets up a throw-away CA with the project's own scripts (loopback ports), then alternates: one
`Fleet.issue` (lock, fresh look at the identity, key and CSR, the signing request to the CA made in-process
by pki.ca, audit, ledger, filing) and one bare `step ca certificate` with the same provisioner, each for
a new name. Prints the median seconds of each and the median of the pairwise ratios. Usage (after
`make test` built the tools):

    PATH=$PWD/.tools/bin:$PATH .venv/bin/python bench/issue_bench.py [--count 20] [--existing 0]

--existing N files N extra certificates (made with cryptography) into certs/ first, to show what the
size of certs/ adds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "streamlit"), str(REPO / "tests"), str(REPO / "bench")]

from bench_ca import ThrowawayCA  # noqa: E402
from certfactory import write_certificate  # noqa: E402
from pki.fleet import Fleet  # noqa: E402
from pki.issuing import IssueRequest  # noqa: E402
from pki.model import Kind  # noqa: E402
from pki.roles import Actor, Role  # noqa: E402
from pki.settings import load_settings  # noqa: E402
from pki.step import run_step  # noqa: E402

BENCH = Actor("bench", Role.OPERATOR, "127.0.0.1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--existing", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ca = ThrowawayCA(base)
        try:
            settings = load_settings(ca.env)
            fleet = Fleet(settings)
            now = dt.datetime.now(dt.UTC)
            for i in range(args.existing):
                write_certificate(
                    settings.certs_dir, f"old-{i:06}", f"old-{i:06}", not_after=now + dt.timedelta(days=90)
                )
            fleet.limits()
            raw_dir = base / "raw"
            raw_dir.mkdir()
            password = str(settings.password_file(settings.client_provisioner))
            core, raw = [], []
            for i in range(args.count + 1):  # the first pair warms up
                start = time.perf_counter()
                fleet.issue(BENCH, IssueRequest(f"bench-{i:04}", Kind.CLIENT, "", 30, "EC P-256"))
                core.append(time.perf_counter() - start)
                start = time.perf_counter()
                run_step(
                    ["ca", "certificate", f"raw-{i:04}", str(raw_dir / f"{i}.crt"), str(raw_dir / f"{i}.key"),
                     "--provisioner", settings.client_provisioner, "--provisioner-password-file", password,
                     "--not-after", "720h", "--force", "--ca-url", settings.ca_url, "--root", str(settings.root)],
                    step_path=settings.step_path, timeout=30, step_bin=settings.step_bin,
                )  # fmt: skip
                raw.append(time.perf_counter() - start)
        finally:
            ca.stop()
    core, raw = core[1:], raw[1:]
    ratios = [c / r for c, r in zip(core, raw, strict=True)]
    print(f"issuances each                  {args.count} (certs/ held {args.existing} others)")
    print(f"Fleet.issue, median             {statistics.median(core):8.3f} s")
    print(f"raw step ca certificate, median {statistics.median(raw):8.3f} s")
    spread = f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    print(f"ratio, median of pairs          {statistics.median(ratios):8.2f}  {spread}")


if __name__ == "__main__":
    main()
