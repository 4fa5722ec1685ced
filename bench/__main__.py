"""`make bench`: run every benchmark, print each figure beside its same-run baseline, and write
bench/results.json ({id: {"value", "unit", "baseline", "ratio"}}) so runs can be compared.

BENCH_ONLY=S1,Q1 runs a subset; BENCH_DIFF=0 skips the 1,000,000-number differential check.
"""

import json
import os
import sys
import time
from pathlib import Path

from bench import (
    b_poll,
    d1_admin,
    f1_fairness,
    fo1_failover,
    l1_long_send,
    m1_memory,
    n1_normalise,
    q1_status,
    r1_rate_limit,
    s1_send,
    s2_small_sends,
    s3_bulk_send,
    w1_webhooks,
)
from tests.number_samples import SAMPLE_COUNTRIES

RESULTS = Path(__file__).resolve().parent / "results.json"

# id -> (run, target as text, check of the result)
BENCHMARKS = {
    "N1": (n1_normalise.run, "ratio >= 10", lambda r: r["ratio"] >= 10),
    "S1": (
        s1_send.run,
        "ratio <= 1.5 and < 0.3 s",
        lambda r: r["ratio"] <= 1.5 and r["value"] < 0.3,
    ),
    "S2": (
        s2_small_sends.run,
        "ratio >= 0.30 sync, >= 0.60 respond-async",
        lambda r: r["ratio"] >= 0.30 and r["async_ratio"] >= 0.60,
    ),
    "S3": (s3_bulk_send.run, "ratio <= 1.3", lambda r: r["ratio"] <= 1.3),
    "L1": (
        l1_long_send.run,
        "ratio >= 0.9, API < 1 s, 0 lost, 0 doubled",
        lambda r: (
            r["ratio"] >= 0.9
            and max(r["ping_max_ms"], r["small_send_max_ms"]) < 1000
            and r["lost_at_fake"] == r["doubled_at_fake"] == 0
            and r["lost_in_db"] == r["doubled_in_db"] == 0
        ),
    ),
    "F1": (f1_fairness.run, "p99 < 1 s", lambda r: r["value"] < 1000),
    "R1": (r1_rate_limit.run, "<= 31", lambda r: r["value"] <= 31),
    "Q1": (q1_status.run, "p99 < 5 ms", lambda r: r["value"] < 5),
    "M1": (m1_memory.run, "< 300 MB", lambda r: r["value"] < 300),
    "P1": (
        b_poll.run,
        ">= 20,000/s and ratio >= 1/3",
        lambda r: r["value"] >= 20_000 and r["ratio"] >= 1 / 3,
    ),
    "FO1": (
        fo1_failover.run,
        "all answered, 0 doubled, ratio < 2",
        lambda r: r["answered"] == fo1_failover.RECIPIENTS and r["doubled"] == 0 and r["ratio"] < 2,
    ),
    "D1": (d1_admin.run, "p99 < 200 ms, every page", lambda r: r["value"] < 200),
    "W1": (
        w1_webhooks.run,
        "all within 5 s and >= 2,000/s",
        lambda r: r["seconds"] <= 5 and r["value"] >= 2_000,
    ),
}
DIFFERENTIAL_NUMBERS = 1_000_000


def main() -> int:
    only = [name for name in os.environ.get("BENCH_ONLY", "").split(",") if name]
    results = {}
    for name, (run, target, met) in BENCHMARKS.items():
        if only and name not in only:
            continue
        began = time.perf_counter()
        result = run()
        result.pop("id", None)
        results[name] = result
        baseline = "-" if result["baseline"] is None else f"{result['baseline']:,.3f}"
        ratio = "-" if result["ratio"] is None else f"{result['ratio']:.3f}"
        extra = ", ".join(
            f"{k} {v:,.2f}"
            for k, v in result.items()
            if k not in {"value", "unit", "baseline", "ratio"}
        )
        print(
            f"{name}: {result['value']:,.3f} {result['unit']}  baseline {baseline}  "
            f"ratio {ratio}  target {target}: {'met' if met(result) else 'NOT met'}"
            f"{'  (' + extra + ')' if extra else ''}  [{time.perf_counter() - began:.0f}s]",
            flush=True,
        )
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {RESULTS}")
    if os.environ.get("BENCH_DIFF", "1") != "0" and not only:
        # The shipped setting over every sample country; `make soak` runs all configurations.
        mismatches = n1_normalise.differential(DIFFERENTIAL_NUMBERS, [(SAMPLE_COUNTRIES, True)])
        print(
            f"differential: {DIFFERENTIAL_NUMBERS:,} numbers per configuration, "
            f"{mismatches} mismatches"
        )
        if mismatches:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
