"""Generate a deterministic mix of phone-number entries, good and bad, for tests and benchmarks."""

import random
from collections.abc import Sequence

import phonenumbers
from phonenumbers import PhoneNumberType

# ZA and BW are the product's home countries; KE, NG, GB and US add other national
# prefixes, IDDs and lengths (US: national prefix "1" equals its country code).
SAMPLE_COUNTRIES = ("ZA", "BW", "KE", "NG", "GB", "US")
# Numbers of countries nobody configures, to be discarded.
_FOREIGN = ("DE", "IN", "AU", "BR", "FR", "NA", "ZW", "LS", "SZ", "MZ", "CA", "GG")

_TYPES = (
    (PhoneNumberType.MOBILE, 6),
    (PhoneNumberType.FIXED_LINE, 3),
    (PhoneNumberType.TOLL_FREE, 1),
    (PhoneNumberType.PREMIUM_RATE, 1),
    (PhoneNumberType.VOIP, 1),
    (PhoneNumberType.PAGER, 1),
    (PhoneNumberType.PERSONAL_NUMBER, 1),
    (PhoneNumberType.UAN, 1),
)

_SEPARATORS = (" ", " ", "-", ".", "/", "  ", " - ")
_UNICODE_DIGITS = ("0123456789", "٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९")
_JUNK = (
    "",
    " ",
    "numbersToClean",
    "n/a",
    "+",
    "++",
    "-",
    "()",
    "tel:",
    "null",
    "undefined",
    "\x00\x01\x02",
    "\u200b",
    "📱",
    "☎️ call me",
    "ext. 12",
    "0",
    "00",
    "000",
    "+0",
    "+1",
    "+12",
    "+123",
    "+27",
    "+267",
    "27",
    "267",
    "0027",
    "00267",
    "00270",
    "+00",
)


def _examples(countries: Sequence[str]) -> dict[tuple[str, int], str]:
    """Return national significant numbers of each region's example numbers, by type."""
    found = {}
    for region in tuple(countries) + _FOREIGN:
        for number_type, _ in _TYPES:
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is not None:
                found[(region, number_type)] = phonenumbers.national_significant_number(example)
    return found


class _Generator:
    def __init__(self, seed: int, countries: Sequence[str]):
        self.rng = random.Random(seed)
        self.countries = tuple(countries)
        self.examples = _examples(self.countries)
        self.keys = sorted(self.examples)
        self.home_keys = [k for k in self.keys if k[0] in self.countries]
        self.meta = {
            region: phonenumbers.PhoneMetadata.metadata_for_region(region)
            for region in self.countries + _FOREIGN
        }

    def _mutate(self, nsn: str) -> str:
        """Change some trailing digits, and now and then one anywhere."""
        rng = self.rng
        digits = list(nsn)
        for i in range(max(0, len(digits) - rng.randint(1, 7)), len(digits)):
            digits[i] = rng.choice("0123456789")
        if rng.random() < 0.1:
            digits[rng.randrange(len(digits))] = rng.choice("0123456789")
        return "".join(digits)

    def _separate(self, digits: str) -> str:
        """Insert separators (and sometimes parentheses) the way people type numbers."""
        rng = self.rng
        if rng.random() < 0.5 or len(digits) < 4:
            return digits
        out = []
        i = 0
        if rng.random() < 0.3:
            head = rng.randint(2, 4)
            out.append("(" + digits[:head] + ")")
            i = head
        while i < len(digits):
            step = rng.randint(2, 4)
            out.append(digits[i : i + step])
            i += step
        return rng.choice(_SEPARATORS).join(out)

    def _realistic(self) -> str:
        rng = self.rng
        keys = self.home_keys if rng.random() < 0.85 else self.keys
        region, number_type = rng.choice(keys)
        while rng.random() > dict(_TYPES)[number_type] / 6:
            region, number_type = rng.choice(keys)
        meta = self.meta[region]
        nsn = self._mutate(self.examples[(region, number_type)])
        cc = str(meta.country_code)
        roll = rng.random()
        if roll < 0.05:  # wrong length
            nsn = nsn[: -rng.randint(1, 3)] if rng.random() < 0.5 else nsn + self._digits(1, 3)
            roll = rng.random()
        prefix = meta.national_prefix or ""
        if roll < 0.35:
            body = self._separate(prefix + nsn)
        elif roll < 0.55:
            body = "+" + cc + rng.choice(("", " ", "-", " (0)")) + self._separate(nsn)
        elif roll < 0.70:
            body = cc + rng.choice(("", " ")) + self._separate(nsn)
        elif roll < 0.78:
            idd = rng.choice(("00", "00", "000", "009", "011", "0011"))
            body = idd + rng.choice(("", " ")) + cc + self._separate(nsn)
        elif roll < 0.82:
            body = nsn
        elif roll < 0.86:  # trunk prefix kept after the country code
            body = rng.choice(("+", "")) + cc + "0" + nsn
        elif roll < 0.89:  # another sample country's code on this number
            other = self.meta[rng.choice(self.countries)]
            body = rng.choice(("+", "", "00")) + str(other.country_code) + nsn
        elif roll < 0.92:
            body = "tel:+" + cc + "-" + nsn
        elif roll < 0.95:
            body = rng.choice(("", " ", "\t", "Tel: ", "\u00a0")) + "+" + cc + nsn + " "
        elif roll < 0.97:  # a "+" where it does not lead
            cut = rng.randint(1, len(nsn))
            body = prefix + nsn[:cut] + "+" + nsn[cut:]
        else:
            body = "+" + "+" * rng.randint(1, 2) + cc + nsn
        return body

    def _digits(self, low: int, high: int) -> str:
        rng = self.rng
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(low, high)))

    def _unusual(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.30:
            return rng.choice(("", "+", "0", "00")) + self._digits(1, 18)
        if roll < 0.45:
            return rng.choice(_JUNK)
        if roll < 0.55:  # a realistic number in other scripts' digits
            table = rng.choice(_UNICODE_DIGITS[1:])
            return self._realistic().translate(str.maketrans("0123456789", table))
        if roll < 0.62:  # very long
            return rng.choice(
                (
                    self._digits(240, 260),
                    "+" + self._digits(245, 255),
                    "x" * rng.randint(1000, 10_000),
                    "0" * rng.randint(200, 400) + "830000000",
                    self._realistic() * rng.randint(2, 30),
                )
            )
        if roll < 0.72:
            letters = "abcdefghijklmnopqrstuvwxyzABCXYZ"
            text = "".join(rng.choice(letters) for _ in range(rng.randint(1, 15)))
            return text if rng.random() < 0.5 else text + self._realistic()
        if roll < 0.82:  # control characters and odd whitespace mixed in
            number = self._realistic()
            cut = rng.randint(0, len(number))
            return number[:cut] + rng.choice("\x00\n\r\t\x0b\x7f\u2028\ufeff") + number[cut:]
        if roll < 0.92:  # boundaries of the international and national paths
            cc = str(self.meta[rng.choice(self.countries)].country_code)
            return rng.choice(("+", "", "00", "0", "+0")) + cc + self._digits(0, 12)
        return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 20)))

    def generate(self, n: int) -> list[str]:
        rng = self.rng
        out: list[str] = []
        for _ in range(n):
            roll = rng.random()
            if out and roll < 0.15:
                out.append(rng.choice(out))  # an exact repeat
            elif roll < 0.80:
                out.append(self._realistic())
            else:
                out.append(self._unusual())
        return out


def generate(n: int, seed: int = 0, countries: Sequence[str] = SAMPLE_COUNTRIES) -> list[str]:
    """Return n entries mixing valid, invalid, oddly formatted and repeated numbers.

    Most realistic numbers belong to `countries`; some belong to countries outside it.
    """
    return _Generator(seed, countries).generate(n)
