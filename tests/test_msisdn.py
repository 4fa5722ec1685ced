import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.msisdn import CleanResult, Normaliser, clean_digits, normalise_reference
from tests.number_samples import SAMPLE_COUNTRIES

README_EXAMPLE = ["0830000000", "27840000000", "numbersToClean", "0820000000"]


@pytest.fixture
def za():
    return Normaliser(["ZA"])


def test_readme_example_keeps_first_occurrence_order(za):
    assert za.clean(README_EXAMPLE) == CleanResult(
        valid=["27830000000", "27840000000", "27820000000"], invalid=1, duplicates=0
    )


def test_reference_gives_the_readme_example_too():
    assert [normalise_reference(n, ["ZA"]) for n in README_EXAMPLE] == [
        "27830000000",
        "27840000000",
        None,
        "27820000000",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "0830000000",
        "27830000000",
        "+27830000000",
        "+27 83 000 0000",
        "083-000-0000",
        "(083) 000 0000",
        "083.000.0000",
        "0027830000000",
        "0027 (0)83 000 0000",
        "  083 000 0000\t",
        "tel:+27-83-000-0000",
        "+27830000000 ",
        "Mobile: +27 83 000 0000",
    ],
)
def test_common_formats_give_international_digits(za, text):
    assert za.normalise(text) == "27830000000"


def test_plus_counts_only_before_the_first_digit():
    assert clean_digits(" +27 83") == "+2783"
    assert clean_digits("(+27) 83") == "+2783"
    assert clean_digits("27+83") == "2783"


def test_only_ascii_digits_survive_cleaning():
    assert clean_digits("٠٨٣٠٠٠٠٠٠٠") == ""
    assert clean_digits("０８３ 000 0000") == "0000000"


def test_other_scripts_digits_are_not_numbers(za):
    assert za.normalise("٠٨٣٠٠٠٠٠٠٠") is None


def test_first_configured_country_that_accepts_wins():
    # 71123456 is a Botswana mobile in national form and not a South African number.
    assert Normaliser(["ZA", "BW"]).normalise("71123456") == "26771123456"
    assert Normaliser(["BW", "ZA"]).normalise("0830000000") == "27830000000"


def test_country_order_decides_between_two_readings():
    # "0712345678" reads as a mobile both in South Africa and in Kenya.
    assert Normaliser(["ZA", "KE"]).normalise("0712345678") == "27712345678"
    assert Normaliser(["KE", "ZA"]).normalise("0712345678") == "254712345678"


def test_numbers_of_countries_not_configured_are_discarded():
    za = Normaliser(["ZA"])
    assert za.normalise("+26771123456") is None
    assert za.normalise("+447400123456") is None
    assert Normaliser(["ZA", "GB"]).normalise("+447400123456") == "447400123456"


def test_fixed_lines_are_refused_when_mobile_only(za):
    assert za.normalise("0101234567") is None
    assert Normaliser(["ZA"], mobile_only=False).normalise("0101234567") == "27101234567"


def test_toll_free_numbers_pass_only_without_mobile_only():
    assert Normaliser(["ZA"]).normalise("0801234567") is None
    assert Normaliser(["ZA"], mobile_only=False).normalise("0801234567") == "27801234567"


def test_us_numbers_are_fixed_line_or_mobile_so_they_pass_mobile_only():
    assert Normaliser(["US"]).normalise("(201) 555-0123") == "12015550123"
    assert Normaliser(["US"]).normalise("1 201 555 0123") == "12015550123"


def test_duplicate_numbers_are_counted_not_repeated(za):
    result = za.clean(["0830000000", "+27 83 000 0000", "27830000000", "0840000000"])
    assert result == CleanResult(valid=["27830000000", "27840000000"], invalid=0, duplicates=2)


def test_invalid_entries_are_counted(za):
    result = za.clean(["", "hello", "083", "08300000001234", "0830000000"])
    assert result == CleanResult(valid=["27830000000"], invalid=4, duplicates=0)


def test_counts_add_up_to_the_entries_given(za):
    entries = README_EXAMPLE * 3 + ["", "+", "0830000000"]
    result = za.clean(entries)
    assert len(result.valid) + result.invalid + result.duplicates == len(entries)


def test_clean_accepts_any_iterable(za):
    assert za.clean(iter(README_EXAMPLE)).valid == ["27830000000", "27840000000", "27820000000"]
    assert za.clean([]) == CleanResult(valid=[], invalid=0, duplicates=0)


def test_non_string_entries_are_counted_invalid(za):
    assert za.clean([830000000, None, ["0830000000"], "0830000000"]) == CleanResult(
        valid=["27830000000"], invalid=3, duplicates=0
    )


def test_repeated_calls_answer_from_the_cache_the_same_way(za):
    assert za.normalise("0830000000") == za.normalise("0830000000") == "27830000000"
    assert za.normalise("nope") is None
    assert za.normalise("nope") is None


@pytest.mark.parametrize(
    "text",
    ["", "+", "++", "0", "\x00", "\ud800", "😀" * 50, "x" * 10_000, "9" * 10_000, "+" + "8" * 251],
)
def test_strange_input_is_invalid_not_an_error(za, text):
    assert za.normalise(text) is None
    assert normalise_reference(text, ["ZA"]) is None


def test_country_codes_are_case_insensitive():
    assert Normaliser(["za"]).normalise("0830000000") == "27830000000"


def test_unknown_countries_are_refused_at_construction():
    with pytest.raises(ValueError, match="XX"):
        Normaliser(["ZA", "XX"])
    with pytest.raises(ValueError):
        Normaliser([])


def test_short_numbers_round_trip_only_with_a_plus():
    # phonenumbers accepts 7-digit South African mobiles (8[1-4] and 3 to 7 digits),
    # and "278112348" then reads as a 9-digit national number, not as +27 8112348.
    za = Normaliser(["ZA"])
    assert za.normalise("0811 2348") == "278112348"
    assert za.normalise("278112348") is None
    assert za.normalise("+278112348") == "278112348"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_normalise_never_raises_and_gives_digits_or_none(text):
    for countries in (["ZA"], ["ZA", "BW"], list(SAMPLE_COUNTRIES)):
        number = Normaliser(countries).normalise(text)
        assert number is None or (number.isascii() and number.isdigit())


_NUMBERISH = st.text(alphabet="0123456789+ -()", max_size=20)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_NUMBERISH, st.text(max_size=30)), st.sampled_from([["ZA"], ["ZA", "BW"]]))
def test_fast_path_agrees_with_reference_on_arbitrary_text(text, countries):
    for mobile_only in (True, False):
        expected = normalise_reference(text, countries, mobile_only)
        assert Normaliser(countries, mobile_only).normalise(text) == expected


@settings(max_examples=500, deadline=None)
@given(_NUMBERISH, st.sampled_from([["ZA"], ["ZA", "BW"], list(SAMPLE_COUNTRIES)]))
def test_a_normalised_number_with_a_plus_normalises_to_itself(text, countries):
    # Plain normalise(normalise(x)) does not always hold (see the short-number test);
    # the international form with "+" does, for the reference and the fast path alike.
    number = normalise_reference(text, countries)
    if number is not None:
        assert normalise_reference("+" + number, countries) == number
        assert Normaliser(countries).normalise("+" + number) == number
