"""The fast Normaliser must give exactly the reference answer for every generated entry.

MSISDN_DIFF_N raises the number of entries (default 50,000); the benchmark runs 1,000,000.
"""

import os

import pytest

from messaging.msisdn import Normaliser, clean_reference, normalise_reference
from tests.number_samples import SAMPLE_COUNTRIES, generate

DIFF_N = int(os.environ.get("MSISDN_DIFF_N", "50000"))

CONFIGURATIONS = [
    (("ZA",), True),
    (("ZA", "BW"), True),
    (("BW", "ZA"), True),
    (SAMPLE_COUNTRIES, True),
    (SAMPLE_COUNTRIES, False),
    (("ZA", "BW"), False),
    (("US", "GB", "NG"), True),
    # Regions replayed only through the reference (shared code, transform rule).
    (("ZA", "CA", "GG", "AR"), True),
]


def mismatches(entries, countries, mobile_only):
    """Return (entry, fast, reference) for every entry where the two disagree."""
    normaliser = Normaliser(countries, mobile_only=mobile_only)
    reference = {}
    found = []
    for entry in entries:
        if entry not in reference:
            reference[entry] = normalise_reference(entry, countries, mobile_only)
        fast = normaliser.normalise(entry)
        if fast != reference[entry]:
            found.append((entry, fast, reference[entry]))
    return found


def describe(found):
    lines = [f"{len(found)} mismatches; first {min(len(found), 20)}:"]
    lines += [f"  {entry!r}: fast={fast!r} reference={ref!r}" for entry, fast, ref in found[:20]]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def entries():
    return generate(DIFF_N, seed=20240601)


@pytest.mark.parametrize(("countries", "mobile_only"), CONFIGURATIONS)
def test_fast_normaliser_agrees_with_reference(entries, countries, mobile_only):
    found = mismatches(entries, countries, mobile_only)
    assert not found, describe(found)


def test_clean_agrees_with_reference_counts(entries):
    countries = ("ZA", "BW")
    assert Normaliser(countries).clean(entries) == clean_reference(entries, countries)


@pytest.mark.slow
def test_a_million_numbers_agree_in_every_configuration():
    from bench.n1_normalise import differential  # the bench owns the pool

    assert differential(1_000_000) == 0
