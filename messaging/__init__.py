"""messaging: an SMS gateway. `create_app` wires the modules together and nothing else."""

import logging
from collections.abc import Mapping

from flask import Flask

from messaging import (
    admin,
    api,
    auth,
    cli,
    db,
    dispatch,
    inbound,
    logs,
    ops,
    optouts,
    receipts,
    services,
    signin,
    web,
)
from messaging.config import config_from_mapping, load_config
from messaging.health import Health
from messaging.msisdn import Normaliser
from messaging.providers.registry import load_providers
from messaging.settings import Config

log = logging.getLogger(__name__)


@cli.one_line_errors
def create_app(test_config: Config | Mapping | None = None) -> Flask:
    """Build the app from config.json (or `test_config`), with database and provider ready."""
    if test_config is None:
        config = load_config()
    elif isinstance(test_config, Config):
        config = test_config
    else:
        config = config_from_mapping(test_config)

    app = Flask(__name__, static_folder=None)  # no static files: /docs serves its own
    app.json = web.JSONProvider(app)
    app.url_map.converters["anytext"] = web.AnyText
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    logs.init_app(app, config)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    # The providers first: a misspelt name stops start-up before the database is touched.
    providers = load_providers(config)
    database = db.prepare(config)
    for configured in providers:
        dispatch.share_rate_limit(configured.provider, database, configured.key)
    services.init_app(
        app,
        services.Services(
            config=config,
            db=database,
            provider=providers.primary.provider,
            normaliser=Normaliser(config.provider.countries, config.provider.mobile_only),
            providers=providers,
            health=Health(database, providers, config.health),
        ),
    )
    web.register_error_handlers(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(receipts.bp)
    app.register_blueprint(inbound.bp)
    app.register_blueprint(optouts.bp)
    admin.init_app(app)
    ops.init_app(app, db.HealthCheck(database.dsn))
    # After the request id and the metrics timer: a refused request is logged and timed too.
    auth.init_app(
        app,
        auth.make_authenticator(config.authentication, database),
        config.authentication,
        signin.SignIn(database, config.authentication.session_secret),
    )
    cli.init_app(app)
    app.wsgi_app = web.SizedBodies(web.CaseInsensitivePaths(app.wsgi_app), config.max_body_bytes)
    return app
