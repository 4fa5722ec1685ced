"""Provider health: how much of its configured weight each provider gets (issue 18).

Every dispatcher on every host counts its calls to each provider in PostgreSQL
(`provider_calls`, by second), and the status writers count the messages that reach a
final status with the time they took. At most once a second some process judges each
provider on the last `providerHealth.window` (one row lock a provider, SKIP LOCKED):

- more than `maxFailureRate` of its calls refused or failed (and at least `minCalls`):
  it is taken out of rotation (factor 0); refused work goes to the next provider;
- its messages slow to reach a final status (mean above `maxTimeToFinal`, over at
  least `minFinals` of them): it loses `recoveryStep` of its weight, at most once per
  `recoveryInterval`;
- neither, and below full weight: it regains `recoveryStep` once per `recoveryInterval`.

So a provider that comes back earns its traffic back a step at a time, as Notify's
provider switching does, and one still failing is tried with a little traffic and taken
out again. A provider's weight is its configured `weight` times this factor.
"""

import logging
import threading
import time
from dataclasses import dataclass

from messaging.db import Database
from messaging.errors import MessagingError
from messaging.providers.registry import Providers
from messaging.queries.health import (
    drop_old_calls,
    health_rows,
    lock_for_evaluation,
    note_calls,
    set_health,
    window_counts,
)
from messaging.settings import HealthSettings

log = logging.getLogger(__name__)

# How often a process reads the factors (and judges the providers due).
REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class WindowCounts:
    accepted: int = 0
    refused: int = 0
    errors: int = 0
    finals: int = 0
    final_seconds: float = 0.0

    @property
    def calls(self) -> int:
        return self.accepted + self.refused + self.errors

    @property
    def failed(self) -> int:
        return self.refused + self.errors


def next_factor(
    factor: float, since_change: float, counts: WindowCounts, settings: HealthSettings
) -> tuple[float, str]:
    """Return a provider's new factor (0 to 1) and why, from its window's counts."""
    calls = counts.calls
    if calls >= settings.min_calls and counts.failed > settings.max_failure_rate * calls:
        return 0.0, f"{counts.failed} of {counts.calls} calls refused or failed"
    stepped = since_change >= settings.recovery_interval
    if counts.finals >= settings.min_finals:
        mean = counts.final_seconds / counts.finals
        if mean > settings.max_time_to_final:
            reason = f"messages took {mean:.0f}s on average to a final status"
            return (max(0.0, factor - settings.recovery_step) if stepped else factor), reason
    if factor < 1.0 and stepped:
        factor = min(1.0, factor + settings.recovery_step)
        return factor, "recovering" if factor < 1.0 else ""
    return factor, "recovering" if factor < 1.0 else ""


@dataclass(frozen=True)
class ProviderWeight:
    provider: str
    weight: float  # configured
    factor: float
    reason: str

    @property
    def current(self) -> float:
        return self.weight * self.factor


class Health:
    """The factors of one process's providers, read (and judged) at most once a second."""

    def __init__(self, db: Database, providers: Providers, settings: HealthSettings):
        self.db = db
        self.providers = providers
        self.settings = settings
        self._factors: dict[str, float] = {}
        self._next_refresh = 0.0
        self._lock = threading.Lock()

    @property
    def tracked(self) -> bool:
        """Health is kept only when there is a choice to make."""
        return self.providers.several

    def factors(self) -> dict[str, float]:
        """Each provider's factor by name (1.0 when unknown); refreshed in passing."""
        if not self.tracked:
            return {}
        with self._lock:
            due = time.monotonic() >= self._next_refresh
            if due:
                self._next_refresh = time.monotonic() + REFRESH_SECONDS
        if due:
            try:
                self.refresh()
            except MessagingError as err:
                log.warning("provider health not refreshed: %s", err.message)
        return self._factors

    def refresh(self) -> dict[str, float]:
        """Judge the providers due for it, then read every factor."""
        names = [c.key for c in self.providers]
        with self.db.transaction() as cur:
            due = lock_for_evaluation(cur, names, REFRESH_SECONDS)
            if due:
                counts = window_counts(cur, self.settings.window)
                for name, factor, since_change in due:
                    window = WindowCounts(*(counts.get(name) or ()))
                    new, reason = next_factor(factor, since_change, window, self.settings)
                    if new != factor:
                        log.warning(
                            "provider %s: weight %.0f%% -> %.0f%%%s",
                            name,
                            factor * 100,
                            new * 100,
                            f" ({reason})" if reason else "",
                        )
                    set_health(cur, name, new, reason, new != factor)
                drop_old_calls(cur, 2 * self.settings.window)
            rows = health_rows(cur)
        self._factors = {name: factor for name, (factor, _) in rows.items()}
        return self._factors

    def note(self, cur, provider: str, accepted=0, refused=0, errors=0) -> None:
        """Count calls to a provider, in the caller's transaction."""
        if self.tracked:
            note_calls(cur, provider, accepted, refused, errors)

    def weights(self) -> list[ProviderWeight]:
        """Every provider's configured weight and current factor (read now)."""
        rows = {}
        if self.tracked:
            with self.db.transaction() as cur:
                rows = health_rows(cur)
        return [
            ProviderWeight(c.key, c.weight, *rows.get(c.key, (1.0, ""))) for c in self.providers
        ]
