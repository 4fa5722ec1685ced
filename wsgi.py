"""The WSGI entry point for gunicorn: `gunicorn wsgi:app`."""

from messaging import create_app

app = create_app()
