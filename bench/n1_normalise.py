"""N1: how many numbers per second Normaliser.clean handles, against the reference.

Usage: python bench/n1_normalise.py [--n 100000] [--diff 1000000]
"""

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from messaging.msisdn import Normaliser, clean_reference
from tests.number_samples import SAMPLE_COUNTRIES, generate

COUNTRIES = ("ZA", "BW")


def run(n: int = 100_000) -> dict:
    """Time Normaliser.clean (fresh each run, best of 3) against the reference."""
    numbers = generate(n, seed=1, countries=COUNTRIES)

    best = float("inf")
    for _ in range(3):
        normaliser = Normaliser(COUNTRIES)
        start = time.perf_counter()
        result = normaliser.clean(numbers)
        best = min(best, time.perf_counter() - start)

    start = time.perf_counter()
    expected = clean_reference(numbers, COUNTRIES)
    baseline_seconds = time.perf_counter() - start

    if result != expected:
        raise AssertionError("Normaliser.clean differs from the reference")
    value = n / best
    baseline = n / baseline_seconds
    return {
        "id": "N1",
        "value": value,
        "unit": "numbers/s",
        "baseline": baseline,
        "ratio": value / baseline,
    }


def _mismatches(job):
    from tests.test_msisdn_differential import mismatches

    entries, countries, mobile_only = job
    return mismatches(entries, countries, mobile_only)


def differential(n: int, configurations=None) -> int:
    """Compare fast and reference on n generated entries; return the mismatch count.

    Every CPU takes a share of the entries. `configurations` defaults to every one the
    test suite checks; `make bench` passes the headline one (all sample countries).
    """
    from tests.test_msisdn_differential import CONFIGURATIONS, describe

    entries = generate(n, seed=7, countries=SAMPLE_COUNTRIES)
    workers = os.cpu_count() or 1
    shares = [entries[i::workers] for i in range(workers)]
    total = 0
    for countries, mobile_only in configurations or CONFIGURATIONS:
        start = time.perf_counter()
        with multiprocessing.Pool(workers) as pool:
            parts = pool.map(_mismatches, [(s, countries, mobile_only) for s in shares])
        found = [mismatch for part in parts for mismatch in part]
        total += len(found)
        print(
            f"diff {list(countries)} mobile_only={mobile_only}: {n} entries, "
            f"{len(found)} mismatches ({time.perf_counter() - start:.0f}s)"
        )
        if found:
            print(describe(found))
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="numbers to time")
    parser.add_argument("--diff", type=int, default=0, help="also run a differential check")
    args = parser.parse_args(argv)

    figures = run(args.n)
    print(
        f"N1 Normaliser.clean: {figures['value']:,.0f} numbers/s; "
        f"reference {figures['baseline']:,.0f} numbers/s; ratio {figures['ratio']:.1f}x"
    )
    if args.diff and differential(args.diff):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
