"""`make run`: start the database if it is the embedded one, migrate, then serve with gunicorn.

Ctrl-C stops gunicorn and the embedded PostgreSQL; its data stays under var/.
"""

import os
import subprocess
import sys

from messaging.auth import exposure_warning
from messaging.config import ConfigError, load_config
from messaging.db import (
    Database,
    apply_migrations,
    database_url,
    ensure_database,
    resolve_dsn,
    start_embedded,
)
from messaging.errors import ServiceUnavailable


def main() -> int:
    try:
        config = load_config()
        if config.database_url is None and config.database.driver == "embedded":
            server = start_embedded(config.database, stop_at_exit=True)
            ensure_database(server, config.database.database)
            dsn = database_url(server, config.database.database)
        else:
            dsn = resolve_dsn(config)
        database = Database(dsn, max_connections=1)
        applied = apply_migrations(database)
        database.close()
    except (ConfigError, ServiceUnavailable) as err:
        print(f"messaging: {err}", file=sys.stderr)
        return 2
    if applied:
        print(f"messaging: applied migrations {', '.join(applied)}", file=sys.stderr)
    host = os.environ.get("MESSAGING_HOST", "127.0.0.1")
    bind = f"{host}:{config.http_port}"
    warning = exposure_warning(config.authentication, host)
    if warning:
        print(f"messaging: WARNING: {warning}", file=sys.stderr)
    # Workers reach the database by URL, so they never start a second embedded server.
    env = {**os.environ, "MESSAGING_DATABASE_URL": dsn}
    command = [sys.executable, "-m", "gunicorn", "--no-control-socket", "--bind", bind]
    if os.path.exists("deploy/gunicorn.conf.py"):
        command += ["--config", "deploy/gunicorn.conf.py"]
    command.append("wsgi:app")
    print(f"messaging: serving on http://{bind}/ (Ctrl-C stops)", file=sys.stderr)
    gunicorn = subprocess.Popen(command, env=env)
    try:
        return gunicorn.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to gunicorn too; let it finish its shutdown.
        return gunicorn.wait()


if __name__ == "__main__":
    sys.exit(main())
