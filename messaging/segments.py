"""Count the SMS parts one message needs, following GSM 03.38 and UCS-2 rules."""

# GSM 03.38 default alphabet, in table order; 0x1B (escape to the extension table)
# is not a character of its own.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each is sent as escape + character, so costs two septets.
GSM7_EXTENDED: frozenset[str] = frozenset("\f^{}\\[~]|€")

_GSM7_ALL = GSM7_BASIC | GSM7_EXTENDED

GSM7 = "GSM-7"
UCS2 = "UCS-2"

_GSM7_SINGLE_PART = 160
_GSM7_PER_PART = 153  # 7 septets go to the concatenation header
_UCS2_SINGLE_PART = 70
_UCS2_PER_PART = 67  # 3 code units go to the concatenation header


def encoding(text: str) -> str:
    """Return "GSM-7" if every character is in the GSM 03.38 tables, else "UCS-2"."""
    return GSM7 if _GSM7_ALL.issuperset(text) else UCS2


def _pack(widths: list[int], per_part: int) -> int:
    """Count parts when each character is kept whole within one part."""
    parts = 1
    used = 0
    for width in widths:
        if used + width > per_part:
            parts += 1
            used = 0
        used += width
    return parts


def count_segments(text: str) -> int:
    """Return the number of SMS parts needed to send text to one recipient."""
    if not text:
        return 0
    if _GSM7_ALL.issuperset(text):
        wide = GSM7_EXTENDED
        single, per_part = _GSM7_SINGLE_PART, _GSM7_PER_PART
    else:
        wide = None
        single, per_part = _UCS2_SINGLE_PART, _UCS2_PER_PART
    if wide is not None:
        widths = [2 if ch in wide else 1 for ch in text]
    else:
        # UTF-16 code units: characters beyond the BMP are a surrogate pair.
        widths = [2 if ch > "\uffff" else 1 for ch in text]
    total = sum(widths)
    if total <= single:
        return 1
    if total == len(text):
        return -(-total // per_part)
    return _pack(widths, per_part)
