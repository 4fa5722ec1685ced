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

# smsProvider.smartEncoding: look-alikes of GSM-7 characters, and what goes out instead.
# Mostly what word processors, phones and web forms put in place of plain punctuation.
# Twilio's Smart Encoding list is the reference (not all of it: letters such as small
# capitals are left out, and ‹ › point the way they look).
SMART_ENCODING: dict[str, str] = {
    # Double quotes
    "\u201c": '"',  # “ LEFT DOUBLE QUOTATION MARK (a word processor's opening quote)
    "\u201d": '"',  # ” RIGHT DOUBLE QUOTATION MARK
    "\u201e": '"',  # „ DOUBLE LOW-9 QUOTATION MARK (opening quote in German, Afrikaans)
    "\u201f": '"',  # ‟ DOUBLE HIGH-REVERSED-9 QUOTATION MARK
    "\u00ab": '"',  # « LEFT-POINTING DOUBLE ANGLE QUOTATION MARK
    "\u00bb": '"',  # » RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK
    "\u2033": '"',  # ″ DOUBLE PRIME (inches, seconds)
    "\u02ba": '"',  # ʺ MODIFIER LETTER DOUBLE PRIME
    "\u02ee": '"',  # ˮ MODIFIER LETTER DOUBLE APOSTROPHE
    "\u275d": '"',  # ❝ HEAVY DOUBLE TURNED COMMA QUOTATION MARK ORNAMENT
    "\u275e": '"',  # ❞ HEAVY DOUBLE COMMA QUOTATION MARK ORNAMENT
    "\u301d": '"',  # 〝 REVERSED DOUBLE PRIME QUOTATION MARK
    "\u301e": '"',  # 〞 DOUBLE PRIME QUOTATION MARK
    # Single quotes and apostrophes
    "\u2018": "'",  # ‘ LEFT SINGLE QUOTATION MARK
    "\u2019": "'",  # ’ RIGHT SINGLE QUOTATION MARK (the typographic apostrophe: can’t)
    "\u201b": "'",  # ‛ SINGLE HIGH-REVERSED-9 QUOTATION MARK
    "\u201a": ",",  # ‚ SINGLE LOW-9 QUOTATION MARK (looks like a comma)
    "\u2032": "'",  # ′ PRIME (feet, minutes)
    "\u02b9": "'",  # ʹ MODIFIER LETTER PRIME
    "\u02bb": "'",  # ʻ MODIFIER LETTER TURNED COMMA
    "\u02bc": "'",  # ʼ MODIFIER LETTER APOSTROPHE
    "\u02bd": "'",  # ʽ MODIFIER LETTER REVERSED COMMA
    "\u02c8": "'",  # ˈ MODIFIER LETTER VERTICAL LINE
    "\u02ca": "'",  # ˊ MODIFIER LETTER ACUTE ACCENT
    "\u02cb": "'",  # ˋ MODIFIER LETTER GRAVE ACCENT
    "\u00b4": "'",  # ´ ACUTE ACCENT (typed for an apostrophe)
    "`": "'",  # ` GRAVE ACCENT: ASCII, but not in GSM-7
    "\u275b": "'",  # ❛ HEAVY SINGLE TURNED COMMA QUOTATION MARK ORNAMENT
    "\u275c": "'",  # ❜ HEAVY SINGLE COMMA QUOTATION MARK ORNAMENT
    "\u2039": "<",  # ‹ SINGLE LEFT-POINTING ANGLE QUOTATION MARK
    "\u203a": ">",  # › SINGLE RIGHT-POINTING ANGLE QUOTATION MARK
    # Dashes and hyphens
    "\u2010": "-",  # ‐ HYPHEN
    "\u2011": "-",  # ‑ NON-BREAKING HYPHEN
    "\u2012": "-",  # ‒ FIGURE DASH
    "\u2013": "-",  # – EN DASH (ranges: 10–12)
    "\u2014": "-",  # — EM DASH
    "\u2015": "-",  # ― HORIZONTAL BAR
    "\u2212": "-",  # − MINUS SIGN
    "\u2043": "-",  # ⁃ HYPHEN BULLET
    "\u2022": "-",  # • BULLET (lists pasted from a document)
    "\ufe63": "-",  # ﹣ SMALL HYPHEN-MINUS
    # Dots
    "\u2026": "...",  # … HORIZONTAL ELLIPSIS
    "\u2024": ".",  # ․ ONE DOT LEADER
    "\u2025": "..",  # ‥ TWO DOT LEADER
    "\u3002": ".",  # 。 IDEOGRAPHIC FULL STOP
    "\u3001": ",",  # 、 IDEOGRAPHIC COMMA
    # Spaces: each is one space
    "\t": " ",  # CHARACTER TABULATION: GSM-7 has none
    "\u00a0": " ",  # NO-BREAK SPACE (&nbsp; from web pages and word processors)
    "\u2000": " ",  # EN QUAD
    "\u2001": " ",  # EM QUAD
    "\u2002": " ",  # EN SPACE
    "\u2003": " ",  # EM SPACE
    "\u2004": " ",  # THREE-PER-EM SPACE
    "\u2005": " ",  # FOUR-PER-EM SPACE
    "\u2006": " ",  # SIX-PER-EM SPACE
    "\u2007": " ",  # FIGURE SPACE
    "\u2008": " ",  # PUNCTUATION SPACE
    "\u2009": " ",  # THIN SPACE
    "\u200a": " ",  # HAIR SPACE
    "\u202f": " ",  # NARROW NO-BREAK SPACE (before : ; ! ? in French)
    "\u205f": " ",  # MEDIUM MATHEMATICAL SPACE
    "\u3000": " ",  # IDEOGRAPHIC SPACE
    # Line breaks
    "\u2028": "\n",  # LINE SEPARATOR
    "\u2029": "\n",  # PARAGRAPH SEPARATOR
    # Invisible: nothing goes out
    "\u00ad": "",  # SOFT HYPHEN (shown only where a line breaks)
    "\u200b": "",  # ZERO WIDTH SPACE
    "\u200c": "",  # ZERO WIDTH NON-JOINER
    "\u200d": "",  # ZERO WIDTH JOINER
    "\u2060": "",  # WORD JOINER
    "\ufeff": "",  # ZERO WIDTH NO-BREAK SPACE (a byte order mark pasted mid-text)
    # Other punctuation and symbols
    "\u203c": "!!",  # ‼ DOUBLE EXCLAMATION MARK
    "\u2044": "/",  # ⁄ FRACTION SLASH
    "\u2215": "/",  # ∕ DIVISION SLASH
    "\u00f7": "/",  # ÷ DIVISION SIGN
    "\u00bc": "1/4",  # ¼ VULGAR FRACTION ONE QUARTER
    "\u00bd": "1/2",  # ½ VULGAR FRACTION ONE HALF
    "\u00be": "3/4",  # ¾ VULGAR FRACTION THREE QUARTERS
    "\u2217": "*",  # ∗ ASTERISK OPERATOR
    "\u2223": "|",  # ∣ DIVIDES
    "\u02c6": "^",  # ˆ MODIFIER LETTER CIRCUMFLEX ACCENT
    "\u02dc": "~",  # ˜ SMALL TILDE
    "\u223c": "~",  # ∼ TILDE OPERATOR
    # FULLWIDTH forms of ASCII ! to ~ (U+FF01-FF5E, East Asian keyboards): the ASCII
    # character, except the fullwidth grave accent, which goes as the grave accent does.
    **{chr(0xFF01 + offset): chr(0x21 + offset) for offset in range(0x5E)},
    "\uff40": "'",  # ｀ FULLWIDTH GRAVE ACCENT
}
_SMART_ENCODING_TABLE = str.maketrans(SMART_ENCODING)

GSM7 = "GSM-7"
UCS2 = "UCS-2"

_GSM7_SINGLE_PART = 160
_GSM7_PER_PART = 153  # 7 septets go to the concatenation header
_UCS2_SINGLE_PART = 70
_UCS2_PER_PART = 67  # 3 code units go to the concatenation header


def encoding(text: str) -> str:
    """Return "GSM-7" if every character is in the GSM 03.38 tables, else "UCS-2"."""
    return GSM7 if _GSM7_ALL.issuperset(text) else UCS2


def is_text(text: str) -> bool:
    """True unless text holds a lone surrogate (`\\ud800`), which neither UTF-8 (the
    database) nor UCS-2 (the provider) can carry."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def smart_encode(text: str) -> str:
    """Replace look-alikes (SMART_ENCODING) with GSM-7 characters if that makes the whole
    text GSM-7; else return it as written: a text that goes out as UCS-2 anyway keeps its
    typography."""
    if _GSM7_ALL.issuperset(text):
        return text
    replaced = text.translate(_SMART_ENCODING_TABLE)
    return replaced if _GSM7_ALL.issuperset(replaced) else text


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
