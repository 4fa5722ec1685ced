"""Commands (`flask --app messaging ...` or `messaging ...`): thin wrappers over service."""

import click
from flask import current_app
from flask.cli import FlaskGroup

from messaging import db

db_group = click.Group("db", help="Database schema commands.")


@db_group.command("upgrade")
def db_upgrade():
    """Apply pending migrations (start-up applies them too) and print the version."""
    database = db.get_db()
    applied = db.apply_migrations(database)
    with database.transaction() as cur:
        cur.execute("SELECT version FROM migration_version")
        version = cur.fetchone()[0]
    click.echo(f"applied {len(applied)} migration(s); schema version {version}")


def init_app(app) -> None:
    app.cli.add_command(db_group)
    app.shell_context_processor(shell_context)


def shell_context() -> dict:
    """Preload the service objects into `flask shell`."""
    from messaging import queries, service  # noqa: PLC0415 - shell only

    services = current_app.extensions["messaging"]
    return {
        "services": services,
        "config": services.config,
        "db": services.db,
        "provider": services.provider,
        "service": service,
        "queries": queries,
    }


def main() -> None:
    """The `messaging` console script: the Flask CLI bound to this app."""
    from messaging import create_app  # noqa: PLC0415 - avoids an import cycle

    FlaskGroup(create_app=create_app)()
