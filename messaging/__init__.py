"""messaging: an SMS gateway. `create_app` wires the modules together and nothing else."""

import logging
from collections.abc import Mapping

from flask import Flask

from messaging import api, auth, cli, db, logs, ops, receipts, web
from messaging.config import Config, config_from_mapping, load_config
from messaging.msisdn import Normaliser
from messaging.providers.base import load_provider
from messaging.service import Services

log = logging.getLogger(__name__)


def create_app(test_config: Config | Mapping | None = None) -> Flask:
    """Build the app from config.json (or `test_config`), with database and provider ready."""
    if test_config is None:
        config = load_config()
    elif isinstance(test_config, Config):
        config = test_config
    else:
        config = config_from_mapping(test_config)

    app = Flask(__name__)
    app.json = web.JSONProvider(app)
    app.url_map.converters["anytext"] = web.AnyText
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    logs.init_app(app, config)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    database = db.init_app(app, config)
    app.extensions["messaging"] = Services(
        config=config,
        db=database,
        provider=load_provider(config.provider),
        normaliser=Normaliser(config.provider.countries, config.provider.mobile_only),
    )
    auth.init_app(app, config.authentication)
    web.register_error_handlers(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(receipts.bp)
    ops.init_app(app)
    cli.init_app(app)
    app.wsgi_app = web.CaseInsensitivePaths(app.wsgi_app)
    return app
