"""The SQL helpers' own contracts, against the real server."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messaging import queries
from messaging.queries import array_literal

# PostgreSQL text holds any character but NUL (array_literal drops NUL; tested below).
# What an array literal treats specially comes often; any other character now and then.
SPECIAL = st.sampled_from(['"', "\\", ",", "{", "}", " ", "\t", "NULL", "null", "'", "a"])
TEXT = st.lists(
    SPECIAL | st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
).map("".join)


# The connection is only read through, so sharing it between examples is harmless.
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.none() | TEXT, max_size=20))
def test_any_text_and_nulls_come_back_from_the_server_unchanged(db, values):
    with db.cursor() as cur:
        cur.execute("SELECT %s::varchar[]", (array_literal(values),))
        assert cur.fetchone()[0] == values


def test_numbers_and_nul_characters(db):
    with db.cursor() as cur:
        cur.execute("SELECT %s::int[]", (array_literal([3, 1, 2]),))
        assert cur.fetchone()[0] == [3, 1, 2]
        cur.execute("SELECT %s::int[]", (array_literal(["7", None]),))
        assert cur.fetchone()[0] == [7, None]
        for given, stored in [
            (["a\x00b", "c"], ["ab", "c"]),
            (["\x00", None], ["", None]),
            (['c"\x00'], ['c"']),
        ]:
            cur.execute("SELECT %s::varchar[]", (array_literal(given),))
            assert cur.fetchone()[0] == stored


def test_each_advisory_lock_has_an_id_of_its_own():
    # The operator's page once counted its hours under the early receipts' lock, holding up
    # every batch's answer while it counted.
    locks = {name: value for name, value in vars(queries).items() if name.endswith("_LOCK")}
    assert len(locks) >= 4 and len(set(locks.values())) == len(locks), locks
