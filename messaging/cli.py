"""Commands (`flask --app messaging ...` or `messaging ...`): thin wrappers over service."""

import base64
import contextlib
import csv
import functools
import getpass
import importlib
import math
import os
import pkgutil
import re
import secrets
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import click
from flask.cli import AppGroup, FlaskGroup, with_appcontext

from messaging import (
    auth,
    db,
    dispatch,
    downgrade,
    limits,
    optouts,
    polling,
    reconcile,
    retention,
    sends,
    service,
    webhooks,
)
from messaging.config import ConfigError, parse_duration
from messaging.embedded_setup import EmbeddedError
from messaging.errors import MessagingError
from messaging.queries import schema
from messaging.services import current as services
from messaging.settings import UNLIMITED, Limits

# What start-up and commands report on one line (exit status 2): a bad config or provider
# name, a database that cannot be reached or started.
STARTUP_ERRORS = (ConfigError, MessagingError, EmbeddedError)
DEBUG_ENV = "MESSAGING_DEBUG"


class StartupFailed(click.ClickException):
    exit_code = 2


def debugging() -> bool:
    """Tell whether errors should show their traceback (--debug, MESSAGING_DEBUG=1)."""
    # Flask's --debug sets FLASK_DEBUG before the app is built.
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
        for name in (DEBUG_ENV, "FLASK_DEBUG")
    )


def one_line(err: Exception) -> str:
    """Return an error's message on one line."""
    message = err.message if isinstance(err, MessagingError) else str(err)
    return " ".join(message.split()) or type(err).__name__


def one_line_errors(function):
    """Report a start-up error of `function` on one line with exit status 2 under a command."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except STARTUP_ERRORS as err:
            # Outside a command (gunicorn, tests) the caller handles it.
            if debugging() or click.get_current_context(silent=True) is None:
                raise
            raise StartupFailed(one_line(err)) from None

    wrapper.one_line_errors = True
    return wrapper


# AppGroup: every subcommand runs inside the app context.
db_group = AppGroup("db", help="Database schema commands.")


@db_group.command("upgrade")
def db_upgrade():
    """Apply pending migrations (start-up applies them too) and print the version."""
    database = services().db
    applied = db.apply_migrations(database)
    version = db.schema_version(database)
    click.echo(f"applied {len(applied)} migration(s); schema version {version}")


@db_group.command("downgrade-to-original")
def db_downgrade_to_original():
    """Leave the schema the Go service starts on (version 2); ours moves aside, kept.

    Refused (exit 2, nothing changed) while a dispatcher runs or any send is still sending
    or scheduled. Stop this service first; starting it again upgrades the database and
    restores what moved.
    """
    try:
        done = downgrade.downgrade_to_original(services().db)
    except MessagingError as err:
        click.echo(f"downgrade-to-original: {err.message}", err=True)
        raise SystemExit(2) from None
    for line in done:
        click.echo(line)
    click.echo(
        "the Go service starts on this database now; starting this service again upgrades "
        f"it and puts back what {schema.SAVED_SCHEMA} holds"
    )


api_key_group = AppGroup("api-key", help='API keys for authentication.service "apikey".')


# `--recipients-per-day default`: the key takes config `limits` again (an option not given
# is None: left as it is).
CONFIG_LIMIT = "default"


class LimitValue(click.ParamType):
    """A key's own limit: a whole number >= 0, `unlimited`, or `default` (config `limits`)."""

    name = "N|unlimited|default"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value is None:
            return value
        text = value.strip().lower()
        if text == "default":
            return CONFIG_LIMIT
        if text == "unlimited":
            return UNLIMITED
        if text.isascii() and text.isdigit():
            return int(text)
        self.fail(f"{value!r}: give a whole number >= 0, unlimited or default", param, ctx)


# (option, Limits field, config key) of each limit a key may have of its own.
LIMIT_OPTIONS = (
    ("--requests-per-minute", "requests_per_minute", "requestsPerMinute"),
    ("--recipients-per-day", "recipients_per_day", "recipientsPerDay"),
    ("--international-per-day", "international_per_day", "internationalPerDay"),
)


def limit_options(command):
    """Add an option per limit: the key's own, in place of config `limits.<name>`."""
    for option, attr, key in reversed(LIMIT_OPTIONS):
        command = click.option(
            option,
            attr,
            type=LimitValue(),
            default=None,
            help=f"The key's own limits.{key} (unlimited: none; default: the config's).",
        )(command)
    return command


def shown_limits(own_limits: Limits) -> str:
    """Spell a key's own limits as `recipientsPerDay=500 ...` (those set only)."""
    parts = []
    for _, attr, key in LIMIT_OPTIONS:
        value = getattr(own_limits, attr)
        if value is not None:
            parts.append(f"{key}={'unlimited' if value == UNLIMITED else value}")
    return " ".join(parts)


@api_key_group.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="The key reads every caller's sends, not only its own.")
@limit_options
def api_key_create(name, admin, **own_limits):
    """Issue a key called NAME (its sends' originator) and print it; it is shown only once."""
    try:
        own = {attr: None if v == CONFIG_LIMIT else v for attr, v in own_limits.items()}
        key = auth.create_api_key(services().db, name, admin, Limits(**own))
    except MessagingError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"created API key {name!r}; store it now, it cannot be shown again:", err=True)
    click.echo(key)


@api_key_group.command("list")
def api_key_list():
    """List keys: name, created, last used, status and admin, and the key's own limits
    (never a key or its hash)."""
    keys = auth.list_api_keys(services().db)
    if not keys:
        click.echo("no API keys", err=True)
        return
    width = max(len("NAME"), *(len(key.name) for key in keys))
    click.echo(
        f"{'NAME':<{width}}  {'CREATED (UTC)':<19}  {'LAST USED (UTC)':<19}  {'STATUS':<13}  "
        "LIMITS (others: config)"
    )
    for key in keys:
        last_used = f"{key.last_used:%Y-%m-%d %H:%M:%S}" if key.last_used else "never"
        status = ("revoked" if key.revoked else "active") + (" admin" if key.admin else "")
        line = f"{key.name:<{width}}  {key.created:%Y-%m-%d %H:%M:%S}  {last_used:<19}  "
        own = shown_limits(key.own_limits)
        click.echo(line + (f"{status:<13}  {own}" if own else status))


@api_key_group.command("limits")
@click.argument("name")
@limit_options
def api_key_limits(name, **given):
    """Change the limits of the key called NAME (from its next request on) and show its
    limits and what it used in their current windows; without options, only show them."""
    changes = {
        attr: None if value == CONFIG_LIMIT else value
        for attr, value in given.items()
        if value is not None
    }
    try:
        own_limits = auth.set_api_key_limits(services().db, name, **changes)
    except MessagingError as err:
        raise click.ClickException(err.message) from None
    effective = limits.for_caller(services().config.limits, own_limits)
    used = limits.usage(services().db, name)
    for _, attr, key in LIMIT_OPTIONS:
        value = getattr(effective, attr)
        source = "config" if getattr(own_limits, attr) is None else "key"
        shown = "unlimited" if value is None else str(value)
        click.echo(f"{key:<20} {shown:>10} ({source})  used {used.get(key, 0)}")


@api_key_group.command("revoke")
@click.argument("name")
def api_key_revoke(name):
    """Revoke the key called NAME: it is refused from the next request on."""
    try:
        newly = auth.revoke_api_key(services().db, name)
    except MessagingError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"revoked API key {name!r}" if newly else f"API key {name!r} was already revoked")


optout_group = AppGroup("optout", help="The suppression list: numbers no send reaches.")


def _cli_source() -> str:
    return f"cli:{getpass.getuser()}"


def _changed(verb: str, changed: list[str], unchanged: list[str], why: str) -> None:
    click.echo(f"{verb} {len(changed)}" + (f"; {len(unchanged)} {why}" if unchanged else ""))
    for number in changed:
        click.echo(number)


@optout_group.command("add")
@click.argument("numbers", nargs=-1, required=True)
def optout_add(numbers):
    """Opt NUMBERS out (normalised like /normalize): no send reaches them."""
    try:
        added, kept = optouts.opt_out(services(), list(numbers), _cli_source())
    except MessagingError as err:
        raise click.ClickException(err.message) from None
    _changed("opted out", added, kept, "already opted out")


@optout_group.command("remove")
@click.argument("numbers", nargs=-1, required=True)
def optout_remove(numbers):
    """Opt NUMBERS back in: sends reach them again."""
    try:
        removed, missing = optouts.opt_in(services(), list(numbers))
    except MessagingError as err:
        raise click.ClickException(err.message) from None
    _changed("opted in", removed, missing, "were not opted out")


@optout_group.command("list")
def optout_list():
    """List the opted-out numbers: number, since when (UTC), what put it there."""
    entries = optouts.entries(services())
    if not entries:
        click.echo("no opted-out numbers", err=True)
        return
    width = max(len("MSISDN"), *(len(entry.msisdn) for entry in entries))
    click.echo(f"{'MSISDN':<{width}}  {'SINCE (UTC)':<19}  SOURCE")
    for entry in entries:
        click.echo(f"{entry.msisdn:<{width}}  {entry.time:%Y-%m-%d %H:%M:%S}  {entry.source}")


@optout_group.command("import")
@click.argument("numbers_file", metavar="FILE", type=click.File("r", encoding="utf-8-sig"))
def optout_import(numbers_file):
    """Opt out every number of a CSV FILE (a column named msisdn/number/phone, else the
    first); one invalid number refuses the file and changes nothing."""
    numbers = read_numbers(numbers_file)
    if not numbers:
        raise click.ClickException(f"{numbers_file.name}: no numbers in it")
    try:
        added, kept = optouts.opt_out(services(), numbers, f"import:{numbers_file.name}")
    except MessagingError as err:
        raise click.ClickException(f"{numbers_file.name}: {err.message}") from None
    click.echo(f"opted out {len(added)}; {len(kept)} already opted out")


# --- flask send / flask stats ---

NUMBER_COLUMNS = ("msisdn", "msisdns", "number", "numbers", "mobile", "phone", "cell")


def read_numbers(stream) -> list[str]:
    """Read numbers from a CSV: the column named like msisdn/number/phone, else the first."""
    rows = [row for row in csv.reader(stream) if any(cell.strip() for cell in row)]
    column = 0
    if rows:
        header = [cell.strip().lower() for cell in rows[0]]
        named = [i for i, name in enumerate(header) if name in NUMBER_COLUMNS]
        if named:
            column, rows = named[0], rows[1:]
    return [row[column].strip() for row in rows if len(row) > column and row[column].strip()]


@click.command("send")
@click.option("--message", "-m", required=True, help="The text to send.")
@click.option(
    "--file",
    "-f",
    "numbers_file",
    required=True,
    type=click.File("r", encoding="utf-8-sig"),
    help="CSV of numbers: a column named msisdn/number/phone, else the first column.",
)
@click.option("--from", "sender", default=None, help="Sender id (default smsProvider.from).")
@click.option(
    "--at",
    "send_at",
    default=None,
    help="Send at this time instead of now: ISO 8601 with an offset (2026-12-24T08:00+02:00).",
)
@click.option(
    "--async",
    "no_wait",
    is_flag=True,
    help="Record the send and exit; the dispatchers send it (flask dispatch).",
)
@with_appcontext
def send_command(message, numbers_file, sender, send_at, no_wait):
    """Send MESSAGE to every number in a CSV file and print the refNumber."""
    numbers = read_numbers(numbers_file)
    originator = f"cli:{getpass.getuser()}"
    try:
        when = service.parse_send_at(send_at)
        if when is not None or no_wait:
            outcome = service.send_sms(
                services(), message, numbers, sender, originator, send_at=when, wait=0
            )
        else:
            outcome = _send_with_progress(message, numbers, sender, originator)
    except MessagingError as err:
        raise click.ClickException(err.message) from None
    click.echo(
        f"valid {outcome.valid_numbers}, invalid {outcome.invalid_numbers}, duplicates "
        f"{outcome.duplicate_numbers}; accepted by the provider {outcome.messages_sent}",
        err=True,
    )
    if outcome.state != "done":
        click.echo(f"{outcome.state}: {outcome.status_description}", err=True)
    elif not outcome.send_success:
        click.echo(f"send failed: {outcome.status_description}", err=True)
    elif outcome.status_description:
        click.echo(outcome.status_description, err=True)
    click.echo(f"refNumber {outcome.ref_number}")
    if outcome.state == "done" and not outcome.send_success:
        raise SystemExit(1)


def _send_with_progress(message, numbers, sender, originator):
    """Send and stay until every recipient is settled, with a progress bar: the command
    works on the send itself beside any dispatchers, however long it takes."""
    progress = click.progressbar(length=len(numbers), label="sending", file=sys.stderr)
    with progress as bar:
        return service.send_sms(
            services(), message, numbers, sender, originator, wait=math.inf, on_recorded=bar.update
        )


def parse_time(value: str | None, option: str) -> datetime | None:
    """Parse an ISO 8601 date or time; naive means UTC. Returns naive UTC (as stored)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (2026-01-31 or 2026-01-31T08:00)",
            param_hint=option,
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


@click.command("stats")
@click.option("--since", help="Start, ISO 8601, UTC unless a zone is given (default: 24 h ago).")
@click.option("--until", help="End (exclusive), ISO 8601 (default: now).")
@with_appcontext
def stats_command(since, until):
    """Print message totals by status for sends made in a time range."""
    end = parse_time(until, "--until") or datetime.now(UTC).replace(tzinfo=None)
    start = parse_time(since, "--since") or end - timedelta(days=1)
    if start >= end:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    totals, count = sends.message_totals(services().db, start, end)
    click.echo(f"sends from {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC: {count}")
    for status in ("delivered", "failed", "sent", "queued"):
        click.echo(f"{status:<10} {totals[status]:>10}")
    click.echo(f"{'total':<10} {sum(totals.values()):>10}")
    if services().providers.several:
        click.echo("provider weights (configured x health = current):")
        for weight in services().health.weights():
            why = f"  {weight.reason}" if weight.reason else ""
            click.echo(
                f"  {weight.provider:<20} {weight.weight:g} x {weight.factor:.2f} = "
                f"{weight.current:.2f}{why}"
            )


EVERY_FROM_CONFIG = "updateInverval"
PROGRESS_FROM = 300  # messages; fewer finish before a bar would help


@click.command("poll-status")
@click.option(
    "--every",
    metavar="DURATION",
    is_flag=False,
    flag_value=EVERY_FROM_CONFIG,
    default=None,
    help="Keep polling at this interval (e.g. 15m) instead of once; "
    "without a value, deliveryStatus.updateInverval.",
)
@click.option(
    "--window",
    metavar="DURATION",
    default=None,
    help="Ask about messages sent within this (default deliveryStatus.window).",
)
@with_appcontext
def poll_status(every, window):
    """Ask the provider about messages still `sent` and store the answers (run by cron).

    Exits 1 when the provider or the database failed, or when it was stopped (SIGTERM,
    Ctrl-C) before it finished; a stopped run hands its unfinished claims back.
    """
    settings = services().config.delivery_status
    if not settings.enabled:
        click.echo("poll-status: status polling is disabled (deliveryStatus.enabled is false)")
        return
    window_seconds = _duration(window, "--window") if window else None
    interval = settings.update_interval
    if every not in (None, EVERY_FROM_CONFIG):
        interval = _duration(every, "--every")
    with _stopped_by_signals():
        if every is None:
            try:
                summary = _poll_once(window_seconds)
            except KeyboardInterrupt:
                click.echo("poll-status: stopped before it finished", err=True)
                raise SystemExit(1) from None
            click.get_current_context().exit(0 if summary is None or summary.ok else 1)
        click.echo(f"poll-status: polling every {interval:g}s; Ctrl-C stops")
        try:
            while True:
                began = time.monotonic()
                if _poll_once(window_seconds) is None:
                    return
                time.sleep(max(0.0, interval - (time.monotonic() - began)))
        except KeyboardInterrupt:
            click.echo("poll-status: stopped")


@contextlib.contextmanager
def _stopped_by_signals():
    """Turn SIGTERM (systemd, kill) into the KeyboardInterrupt Ctrl-C raises, so either
    stops a run the same way: it hands its claims back. A second signal is ignored while
    that happens."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        for name in (signal.SIGINT, signal.SIGTERM):
            signal.signal(name, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {name: signal.signal(name, stop) for name in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(name, handler)


def _duration(text: str, option: str) -> float:
    try:
        return parse_duration(text, option)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint=option) from None


def _poll_once(window_seconds) -> polling.PollSummary | None:
    """One run, reported as it goes; a progress bar on a terminal when there is much to do."""
    with contextlib.ExitStack() as bars:

        def progress_bar(due: int):
            if due < PROGRESS_FROM:
                return None
            return bars.enter_context(click.progressbar(length=due, label="poll-status")).update

        summary = polling.reconcile_then_poll(
            services(),
            window_seconds,
            report=click.echo,
            progress=progress_bar if sys.stdout.isatty() else None,
        )
    if summary is None:
        name = services().provider.name
        click.echo(
            f"poll-status: {name} has no status query; its delivery receipts "
            f"arrive at POST /callbacks/{name}"
        )
    else:
        click.echo(summary.line())
    days = services().config.delivery_status.retention_days
    if days is not None:
        try:
            click.echo(retention.purge(services(), days * retention.DAY).line())
        except MessagingError as err:
            click.echo(f"purge: stopped: {err.message}")
    return summary


@click.command("reconcile")
@click.option(
    "--older-than",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=None,
    help="Also take batches claimed longer ago than this for abandoned, before their lease "
    "ends (only when you know their process is gone). Default: only batches whose lease "
    "has run out. poll-status runs this with the default.",
)
@with_appcontext
def reconcile_command(older_than):
    """Settle batches a dead dispatcher left at the provider; never resends.

    Each recipient of such a batch gets the provider's answer where it can look sends
    up, else failed, "provider outcome unknown". Batches never handed over are left to
    the dispatchers. Exits 1 if a provider lookup failed.
    """
    try:
        summary = reconcile.reconcile(services(), older_than)
    except MessagingError as err:
        raise click.ClickException(err.message) from None
    click.echo(summary.line())
    if summary.errors:
        raise SystemExit(1)


def _age(text: str) -> float:
    """A --older-than value: a duration with its unit ("90d", "12h"); a bare number is
    refused rather than read as minutes, as config durations are."""
    if re.fullmatch(r"\s*[0-9.]+\s*", text):
        raise click.BadParameter(
            f"{text!r} has no unit: write 90d, 12h or 30m", param_hint="--older-than"
        )
    return _duration(text, "--older-than")


@click.command("purge")
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    required=True,
    help="Remove what was sent (or received) longer ago than this: 90d, 12h, 30m.",
)
@with_appcontext
def purge_command(older_than):
    """Delete messages older than a duration, their status events, the sends left empty and
    old webhook deliveries, in short batches; print what went.

    Sends that keep messages keep exact counters. deliveryStatus.retentionDays makes
    poll-status do this too.
    """
    summary = retention.purge(services(), _age(older_than))
    click.echo(summary.line())


webhooks_group = AppGroup("webhooks", help="Status webhooks (deliveryStatus.callbackUrl).")


@webhooks_group.command("retry")
@click.argument("ref", type=click.IntRange(1, sends.MAX_ID))
def webhooks_retry(ref):
    """Queue the dead webhook deliveries of send REF again (a `sent` event whose final
    status went out since is left out)."""
    summary = webhooks.retry_dead(services(), ref)
    click.echo(summary.line(ref))


@webhooks_group.command("secret")
def webhooks_secret():
    """Print a new secret for deliveryStatus.callbackSecret."""
    click.echo("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())


@click.command("dispatch")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="Batches in flight at once (default smsProvider.maxConcurrentRequests).",
)
@click.option(
    "--until-idle",
    is_flag=True,
    help="Exit once no batch is waiting or being sent and no webhook is due, instead of "
    "running until stopped.",
)
@click.option(
    "--nice",
    type=click.IntRange(0, 19),
    default=dispatch.NICENESS,
    show_default=True,
    help="Added to this process's niceness: on a host it shares with gunicorn, the API's "
    "answers come first and the dispatcher takes the CPU they leave. 0 keeps it as started.",
)
@with_appcontext
def dispatch_command(concurrency, until_idle, nice):
    """Send recorded batches to the provider until stopped (SIGTERM or Ctrl-C finish the
    batches in flight, record them, and exit). Run any number, on any number of hosts."""
    # Before any thread starts: on Linux a thread has its own niceness, taken from the
    # thread that starts it.
    niceness = os.nice(nice)
    dispatcher = dispatch.Dispatcher(services(), concurrency=concurrency)

    def stop(signum, frame):
        click.echo(f"dispatch: {signal.Signals(signum).name}: finishing the batches in flight")
        dispatcher.stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    click.echo(
        f"dispatch: {dispatcher.name}, {dispatcher.concurrency} at once, "
        f"provider {services().provider.name}, niceness {niceness}"
        + ("; until idle" if until_idle else "")
    )
    if until_idle:
        dispatcher.idle_exit = True
    dispatcher.run()
    click.echo(f"dispatch: stopped after {dispatcher.batches} batches")


def init_app(app) -> None:
    for command in (
        poll_status,
        reconcile_command,
        dispatch_command,
        send_command,
        stats_command,
        purge_command,
        db_group,
        api_key_group,
        optout_group,
        webhooks_group,
    ):
        _report_on_one_line(command)
        app.cli.add_command(command)
    app.shell_context_processor(shell_context)


def _report_on_one_line(command: click.Command) -> None:
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            _report_on_one_line(subcommand)
    elif command.callback and not getattr(command.callback, "one_line_errors", False):
        command.callback = one_line_errors(command.callback)


def query_modules() -> SimpleNamespace:
    """Every module of messaging.queries, by name: `queries.sends.find_send(cur, 1)`."""
    package = importlib.import_module("messaging.queries")
    names = [module.name for module in pkgutil.iter_modules(package.__path__)]
    return SimpleNamespace(
        **{name: importlib.import_module(f"messaging.queries.{name}") for name in names}
    )


def shell_context() -> dict:
    """Preload the service objects into `flask shell`."""
    current = services()

    def sql(query: str, *params) -> list[tuple]:
        """Run one SQL statement in its own transaction; return its rows (if any)."""
        with current.db.transaction() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    return {
        "services": current,
        "config": current.config,
        "db": current.db,
        "sql": sql,
        "provider": current.provider,
        "service": service,
        "queries": query_modules(),
        "send_sms": functools.partial(service.send_sms, current),
        "message_status": functools.partial(service.message_status, current),
        "normalize": functools.partial(service.normalize, current),
    }


def main() -> None:
    """The `messaging` console script: the Flask CLI bound to this app."""
    from messaging import create_app  # here, not at the top: avoids an import cycle

    FlaskGroup(create_app=create_app)()
