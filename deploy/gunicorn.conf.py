"""gunicorn settings for messaging: `gunicorn --config deploy/gunicorn.conf.py wsgi:app`.

Anything given on the command line (`--bind`, `--workers`) wins over this file, so
`make run`, the systemd unit and `make e2e` all use it. Environment knobs:
  MESSAGING_BIND            where to listen when no --bind is given (default: 127.0.0.1 at
                            config.json's HTTPPort, as the original listened at HTTPPort)
  WEB_CONCURRENCY           worker processes (default: 2 per CPU + 1)
  MESSAGING_METRICS_DIR     where workers keep their metrics and poll-status adds its runs
                            (default: a fresh temp dir; PROMETHEUS_MULTIPROC_DIR wins if set)
"""

import multiprocessing
import os
import shutil
import signal
import tempfile
from pathlib import Path

# prometheus-client multiprocess mode: every worker writes its metrics into this
# directory and /metrics sums them. It must be set before anything imports the app
# (prometheus-client picks its mode on import, and workers inherit the master's modules).
_own_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    if os.environ.get("MESSAGING_METRICS_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["MESSAGING_METRICS_DIR"]
    else:
        _own_metrics_dir = tempfile.mkdtemp(prefix="messaging-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def _load_config():
    from messaging.config import ConfigError, load_config  # noqa: PLC0415 - after the env

    try:
        return load_config()
    except ConfigError:
        return None  # the app itself will say what is wrong with the config


_config = _load_config()
bind = os.environ.get("MESSAGING_BIND") or f"127.0.0.1:{_config.http_port if _config else 2016}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
# Sync workers: one request at a time each, nginx buffers slow clients in front of them.
worker_class = "sync"
# Build the app (and migrate) once in the master: a worker recycled or restarted while the
# database is down then comes up anyway and answers 503s, instead of failing to boot and
# taking the whole server down with it.
preload_app = True


def _provider_budget() -> float:
    """Longest one provider call may take (settings.call_budget), from the config."""
    from messaging.settings import call_budget  # noqa: PLC0415 - after the env

    return 120.0 if _config is None else call_budget(_config.provider)


# A sync worker silent longer than `timeout` is killed. A request works on its send for
# smsProvider.waitSeconds and then finishes the batch it has at the provider, so it can
# take that plus one provider call with its retries; twice that call leaves room (nginx's
# proxy_read_timeout is longer).
timeout = max(300, int(_provider_budget() * 2))
graceful_timeout = 60
keepalive = 5
# Restart each worker now and then (jittered) to bound any slow leak.
max_requests = 10000
max_requests_jitter = 1000

accesslog = "-"
errorlog = "-"
# The request id the app answers with (nginx's $request_id when it sent one).
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s "%(a)s"'
# nginx sets these; trust them only from itself on loopback.
forwarded_allow_ips = "127.0.0.1,::1"
control_socket_disable = True


def on_starting(server):
    """Start from empty metric files: those of a previous run's workers are stale."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


# A stop the master passes on while a worker is still booting reaches that worker before
# it handles signals itself: the master's handler, inherited by the fork, queues it in the
# worker's copy of the master's queue, where nothing reads it. The master then waits its
# whole graceful_timeout for a worker that serves on (seen when `make run` was killed just
# after "serving on", with its second worker booting).
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def post_fork(server, worker):
    worker.signals_while_booting = getattr(server, "SIG_QUEUE", None)


def post_worker_init(worker):
    """Pass on to the worker's own handlers a stop that came while it booted."""
    queued = getattr(worker, "signals_while_booting", None)
    worker.signals_while_booting = None
    while queued is not None and not queued.empty():
        signum = queued.get_nowait()
        if signum in STOPPING_SIGNALS:
            os.kill(os.getpid(), signum)  # its handlers take a repeated stop as one


def child_exit(server, worker):
    """Mark a finished worker dead, so its live gauges stop counting."""
    from prometheus_client import multiprocess  # noqa: PLC0415 - after the env is set

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
