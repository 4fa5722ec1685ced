import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.segments import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    SMART_ENCODING,
    count_segments,
    encoding,
    smart_encode,
)

GSM7_CHARS = sorted(GSM7_BASIC | GSM7_EXTENDED)
# Characters outside both GSM tables, including emoji beyond the BMP.
_UCS2_ONLY = st.characters(min_codepoint=0x400, max_codepoint=0x1FAFF, exclude_characters="€")


def test_basic_table_is_the_gsm_03_38_default_alphabet():
    assert len(GSM7_BASIC) == 127  # 128 positions, one of them the escape
    for ch in "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà":
        assert ch in GSM7_BASIC
    assert set("0123456789ABCXYZabcxyz") <= GSM7_BASIC
    assert "€" not in GSM7_BASIC and "`" not in GSM7_BASIC and "\x1b" not in GSM7_BASIC


def test_extension_table_holds_the_two_septet_characters():
    assert set("^{}[]~|\\€\f") == GSM7_EXTENDED
    assert not GSM7_EXTENDED & GSM7_BASIC


def test_empty_text_needs_no_parts():
    assert count_segments("") == 0


def test_encoding_is_gsm7_when_every_character_is_in_the_tables():
    assert encoding("Hello {world} €5 @ 10:00") == "GSM-7"
    assert encoding("") == "GSM-7"


def test_one_character_outside_the_tables_makes_the_message_ucs2():
    assert encoding("Hello ` world") == "UCS-2"
    assert encoding("Привет") == "UCS-2"
    assert encoding("ok 👍") == "UCS-2"


@pytest.mark.parametrize(
    ("length", "parts"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_fits_160_in_one_part_and_153_per_part_when_split(length, parts):
    assert count_segments("a" * length) == parts


def test_extension_characters_count_as_two_septets():
    assert count_segments("a" * 158 + "€") == 1  # 160 septets
    assert count_segments("a" * 159 + "€") == 2  # 161 septets
    assert count_segments("a" * 159 + "{") == 2
    assert count_segments("€" * 80) == 1
    assert count_segments("€" * 81) == 2


def test_an_escape_pair_is_not_split_across_parts():
    # 152 septets then "€": the pair cannot straddle parts, so "€" opens part two.
    assert count_segments("a" * 152 + "€" + "a" * 151) == 2  # 152 | 2 + 151
    # 306 septets would be 2 parts of 153, but the first part can only hold 152.
    assert count_segments("a" * 152 + "€" + "a" * 152) == 3  # 152 | 153 | 1
    assert count_segments("a" * 153 + "€" + "a" * 151) == 2  # 153 | 2 + 151
    assert count_segments("€" * 153) == 3  # 76 per part: 152, 152, 2 septets


@pytest.mark.parametrize(
    ("length", "parts"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2_fits_70_in_one_part_and_67_per_part_when_split(length, parts):
    assert count_segments("ж" * length) == parts


def test_emoji_count_as_two_utf16_units():
    assert count_segments("😀" * 35) == 1  # 70 units
    assert count_segments("😀" * 35 + "ж") == 2  # 71 units


def test_a_surrogate_pair_is_not_split_across_parts():
    # 66 units then an emoji: the pair cannot straddle parts, so it opens part two.
    assert count_segments("ж" * 66 + "😀" + "ж" * 65) == 2  # 66 | 2 + 65
    # 134 units would be 2 parts of 67, but the first part can only hold 66.
    assert count_segments("ж" * 66 + "😀" + "ж" * 66) == 3  # 66 | 67 | 1
    assert count_segments("ж" * 67 + "😀" + "ж" * 65) == 2  # 67 | 2 + 65


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_count_segments_never_raises(text):
    assert count_segments(text) >= (1 if text else 0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=GSM7_CHARS, max_size=700), st.sampled_from(GSM7_CHARS))
def test_appending_a_gsm7_character_never_reduces_the_parts(text, ch):
    assert count_segments(text + ch) >= count_segments(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_UCS2_ONLY, min_size=1, max_size=300), st.one_of(_UCS2_ONLY, st.text()))
def test_appending_to_a_ucs2_message_never_reduces_the_parts(text, more):
    assert encoding(text) == "UCS-2"
    assert count_segments(text + more) >= count_segments(text)


# --- smart encoding (smsProvider.smartEncoding) ---


def test_every_smart_encoding_replacement_is_gsm7_and_every_original_is_not():
    for original, replacement in SMART_ENCODING.items():
        assert encoding(original) == "UCS-2", repr(original)
        assert encoding(replacement) == "GSM-7", repr(original)


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("Can\u2019t \u201cwait\u201d \u2013 10\u201312 \u2026", 'Can\'t "wait" - 10-12 ...'),
        ("R\u00a0100\u202f000", "R 100 000"),
        ("tab\there", "tab here"),
        ("zero\u200bwidth\u00adsoft", "zerowidthsoft"),
        ("\u00bd price\uff01", "1/2 price!"),
        ("`quoted\u00b4", "'quoted'"),
        ("caf\u00e9 \u00e0 10:00", "caf\u00e9 \u00e0 10:00"),  # GSM-7 already: as written
    ],
)
def test_smart_encode_replaces_look_alikes_with_gsm7(written, sent):
    assert smart_encode(written) == sent
    assert encoding(smart_encode(written)) == "GSM-7"


@pytest.mark.parametrize("written", ["Can’t wait 👍", "“Привет”", "naïve — ok"])
def test_a_text_that_stays_ucs2_is_kept_as_written(written):
    assert smart_encode(written) == written


def test_99_letters_and_an_apostrophe_are_one_part_once_smart_encoded():
    text = "a" * 99 + "\u2019"
    assert count_segments(text) == 2  # UCS-2 as written
    assert count_segments(smart_encode(text)) == 1


@given(st.text(alphabet=GSM7_CHARS))
def test_smart_encode_leaves_gsm7_text_alone(text):
    assert smart_encode(text) is text
