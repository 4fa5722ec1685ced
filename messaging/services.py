"""What a request, a command or `flask shell` needs: built once per process by create_app."""

from dataclasses import dataclass

from flask import current_app

from messaging.db import Database
from messaging.health import Health
from messaging.msisdn import Normaliser
from messaging.providers.base import Provider
from messaging.providers.registry import Providers
from messaging.queries.status import Owner
from messaging.settings import Config


@dataclass
class Services:
    """The config and the long-lived objects built from it, handed to every service function."""

    config: Config
    db: Database
    provider: Provider  # the primary's plugin (providers.primary.provider)
    normaliser: Normaliser
    providers: Providers
    health: Health

    def plugin_of(self, key: str | None) -> Provider:
        """The plugin of the provider of this configured name (None or unknown: the
        primary, which `provider` is)."""
        configured = self.providers.get(key)
        return self.provider if configured is self.providers.primary else configured.provider

    def owner(self, key: str | None) -> Owner:
        """Whose messages a status answer from the provider of this name may change."""
        configured = self.providers.get(key)
        primary = configured is self.providers.primary
        others = tuple(c.key for c in self.providers if c is not configured) if primary else ()
        return Owner(configured.key, primary, others, self.providers.several)


def init_app(app, services: Services) -> None:
    app.extensions["messaging"] = services


def current() -> Services:
    """Return the Services of the app handling this request or command."""
    return current_app.extensions["messaging"]
