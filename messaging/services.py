"""What a request, a command or `flask shell` needs: built once per process by create_app."""

from dataclasses import dataclass

from flask import current_app

from messaging.db import Database
from messaging.msisdn import Normaliser
from messaging.providers.base import Provider
from messaging.settings import Config


@dataclass
class Services:
    """The config and the long-lived objects built from it, handed to every service function."""

    config: Config
    db: Database
    provider: Provider
    normaliser: Normaliser


def init_app(app, services: Services) -> None:
    app.extensions["messaging"] = services


def current() -> Services:
    """Return the Services of the app handling this request or command."""
    return current_app.extensions["messaging"]
