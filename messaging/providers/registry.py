"""The configured providers: each under its configured name, with its weight and the
numbers it serves (smsProviders, or the one smsProvider).

Pure: no Flask, no database. Health (how much of its weight a provider has earned back)
is the caller's, handed in as factors by name (messaging/health.py).
"""

import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import phonenumbers
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from messaging.providers.base import Provider, load_provider
from messaging.settings import Config, ProviderSettings


@dataclass(frozen=True)
class Routing:
    """The numbers a provider serves: of these countries (by calling code, and by number
    plan where several countries share a code) or starting with these prefixes."""

    countries: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def __post_init__(self):
        codes = {}
        for country in self.countries:
            code = phonenumbers.country_code_for_region(country)
            if code:
                codes[str(code)] = len(COUNTRY_CODE_TO_REGION_CODE.get(code, ())) > 1
        object.__setattr__(self, "_codes", codes)

    @property
    def everything(self) -> bool:
        return not self.countries and not self.prefixes

    def serves(self, msisdn: str) -> bool:
        """Does this provider serve the number (international digits, no "+")?"""
        if self.everything or msisdn.startswith(self.prefixes):
            return True
        for code, shared in self._codes.items():
            if msisdn.startswith(code):
                return not shared or self._region_of(msisdn) in self.countries
        return False

    @staticmethod
    def _region_of(msisdn: str) -> str | None:
        try:
            return phonenumbers.region_code_for_number(phonenumbers.parse("+" + msisdn))
        except phonenumbers.NumberParseException:
            return None


@dataclass(frozen=True)
class Configured:
    """One configured provider: its plugin, settings, weight and routing."""

    key: str  # the configured name: what sms.provider stores, what /callbacks/<key> routes on
    provider: Provider
    settings: ProviderSettings
    routing: Routing

    @property
    def weight(self) -> float:
        return self.settings.weight

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def batch_size(self) -> int:
        """Recipients in one request to it: the smaller of its setting and its plugin's limit."""
        return min(self.settings.max_batch_size, self.provider.max_batch_size)

    def serves_all(self, msisdns: Iterable[str]) -> bool:
        return self.routing.everything or all(self.routing.serves(m) for m in msisdns)


class Providers:
    """Every configured provider, the first being the one whose settings hold for the whole
    service (`primary`, which also carried the rows written before providers were named)."""

    def __init__(self, configured: list[Configured]):
        if not configured:
            raise ValueError("at least one provider")
        self.configured = list(configured)
        self._by_key = {c.key: c for c in self.configured}

    @property
    def primary(self) -> Configured:
        return self.configured[0]

    @property
    def several(self) -> bool:
        return len(self.configured) > 1

    def __iter__(self) -> Iterator[Configured]:
        return iter(self.configured)

    def __len__(self) -> int:
        return len(self.configured)

    def get(self, key: str | None) -> Configured:
        """The provider of this configured name; a row or batch naming none (written before
        providers were named) or one no longer configured is the primary's."""
        return self._by_key.get(key, self.primary) if key else self.primary

    def is_primary(self, key: str) -> bool:
        return key == self.primary.key

    def serving(self, msisdns: list[str], exclude: Iterable[str] = ()) -> list[Configured]:
        """The enabled providers that serve every one of these numbers, but those excluded."""
        excluded = set(exclude)
        return [
            c
            for c in self.configured
            if c.enabled and c.key not in excluded and c.serves_all(msisdns)
        ]

    def route_key(self, msisdn: str) -> tuple[str, ...]:
        """The names of the providers serving a number: recipients sharing it share batches."""
        return tuple(c.key for c in self.configured if c.enabled and c.routing.serves(msisdn))

    @staticmethod
    def choose(
        candidates: list[Configured], factors: Mapping[str, float], rng=random
    ) -> Configured | None:
        """Pick one by weight times health factor; None when none has any weight left."""
        weights = [c.weight * factors.get(c.key, 1.0) for c in candidates]
        if not candidates or sum(weights) <= 0:
            return None
        return rng.choices(candidates, weights)[0]

    @staticmethod
    def next_in_line(candidates: list[Configured], factors: Mapping[str, float]):
        """The candidate to hand refused work to: the healthiest, heaviest first (a
        weight-0 standby and a provider out of rotation come last, in that order)."""
        if not candidates:
            return None
        return max(
            candidates,
            key=lambda c: (factors.get(c.key, 1.0) > 0, c.weight * factors.get(c.key, 1.0)),
        )


def load_providers(config: Config) -> Providers:
    """Instantiate every configured provider's plugin, in configuration order."""
    several = bool(config.providers)
    configured = []
    for index, settings in enumerate(config.all_providers):
        path = f"smsProviders[{index}]" if several else "smsProvider"
        provider = load_provider(settings, path if several else "smsProvider")
        routing = Routing(settings.route_countries, settings.prefixes)
        configured.append(Configured(settings.key, provider, settings, routing))
    return Providers(configured)
