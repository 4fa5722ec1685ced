"""Load config.json (the Go service's format, comments allowed) into a validated, typed object.

Every key is matched case-insensitively. An unknown key loads, with one warning naming it
(and the nearest known key, when one is close), as the original ignored such keys; each
wrong value of a known key fails with one line naming the key as the user spelled it.
Secret values (tokens, passwords, custom fields, provider options) never appear in an
error or a repr.
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from messaging.settings import (
    AuthSettings,
    Config,
    DatabaseSettings,
    DeliveryStatusSettings,
    HealthSettings,
    InboundSettings,
    Limits,
    OptionMap,
    ProviderSettings,
)

CONFIG_ENV = "MESSAGING_CONFIG"
DATABASE_URL_ENV = "MESSAGING_DATABASE_URL"
DEFAULT_CONFIG_PATH = "config.json"


class ConfigError(ValueError):
    """A config file or value the service cannot start with; the message is one line."""

    def __init__(self, message: str, key: str | None = None):
        # Operators read this in a single log line; never let a newline split it.
        super().__init__(" ".join(message.splitlines()))
        self.key = key


# --- value parsers: each takes (value, dotted key path) and returns the typed value ---

Parser = Callable[[Any, str], Any]


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(path: str, expected: str, value: Any, secret: bool = False) -> ConfigError:
    got = "" if secret else f", got {_show(value)}"
    return ConfigError(f"{path}: expected {expected}{got}", key=path)


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value


def _integer(minimum: int, maximum: int | None = None, expected: str = "") -> Parser:
    def parse(value: Any, path: str) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            raise _fail(path, expected, value)
        return value

    return parse


def _number(minimum: float, inclusive: bool = False) -> Parser:
    expected = f"a number >= {minimum:g}" if inclusive else f"a number > {minimum:g}"

    def parse(value: Any, path: str) -> float:
        number = _finite(value)
        if number is None or not (number >= minimum if inclusive else number > minimum):
            raise _fail(path, expected, value)
        return number

    return parse


def _finite(value: Any) -> float | None:
    """Return a JSON number as a finite float, or None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer literal too large for a float
        return None
    return number if math.isfinite(number) else None


def _string(secret: bool = False, non_empty: bool = False) -> Parser:
    expected = "a non-empty string" if non_empty else "a string"

    def parse(value: Any, path: str) -> str:
        if not isinstance(value, str) or (non_empty and not value.strip()):
            raise _fail(path, expected, value, secret)
        return value

    return parse


SESSION_SECRET_CHARS = 32


def _session_secret(value: Any, path: str) -> str:
    """A key to sign cookies with: at least 32 characters, or empty (made at random)."""
    if not isinstance(value, str) or (value and len(value.strip()) < SESSION_SECRET_CHARS):
        raise _fail(
            path,
            f'a random string of at least {SESSION_SECRET_CHARS} characters, or "" '
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)",
            value,
            secret=True,
        )
    return value.strip()


def _choice(*choices: str) -> Parser:
    expected = "one of " + ", ".join(f'"{choice}"' for choice in choices)

    def parse(value: Any, path: str) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise _fail(path, expected, value)
        return value.strip().lower()

    return parse


def _optional(parse: Parser) -> Parser:
    """Let null or "" stand for "not set", as an operator blanking a field expects."""

    def parse_optional(value: Any, path: str) -> Any:
        return None if value is None or value == "" else parse(value, path)

    return parse_optional


def _callback_url(value: Any, path: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^/\s?#]+[^\s]*", value, re.I):
        raise _fail(path, "an http:// or https:// URL", value)
    return value


_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/]+={0,2}")


def _webhook_secret(value: Any, path: str) -> str:
    """A Standard Webhooks secret: "whsec_" and the base64 of 24 to 64 random bytes."""
    expected = 'a secret "whsec_" + base64 of 24-64 bytes (flask webhooks secret makes one)'
    if not isinstance(value, str):
        raise _fail(path, expected, value, secret=True)
    if value == "":
        return value
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except ValueError:
        key = b""
    if not _WEBHOOK_SECRET.fullmatch(value) or not 24 <= len(key) <= 64:
        raise _fail(path, expected, value, secret=True)
    return value


def _url(value: Any, path: str) -> str:
    if not isinstance(value, str) or not re.match(r"https?://[^/\s]", value.strip(), re.I):
        raise _fail(path, "a URL starting with http:// or https://", value)
    return value.strip().rstrip("/")


def _countries(value: Any, path: str) -> tuple[str, ...]:
    expected = 'a non-empty list of two-letter country codes such as ["ZA"]'
    if not isinstance(value, list) or not value:
        raise _fail(path, expected, value)
    codes: list[str] = []
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(r"[A-Za-z]{2}", item.strip()):
            raise _fail(path, expected, item)
        code = item.strip().upper()
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def _prefixes(value: Any, path: str) -> tuple[str, ...]:
    expected = 'a list of international number prefixes such as ["26771", "26772"]'
    if not isinstance(value, list):
        raise _fail(path, expected, value)
    prefixes: list[str] = []
    for item in value:
        digits = item.strip().removeprefix("+") if isinstance(item, str) else None
        if not digits or not re.fullmatch(r"[0-9]{1,15}", digits):
            raise _fail(path, expected, item)
        if digits not in prefixes:
            prefixes.append(digits)
    return tuple(prefixes)


def _fraction(value: Any, path: str) -> float:
    number = _finite(value)
    if number is None or not 0 < number <= 1:
        raise _fail(path, "a number above 0 and at most 1", value)
    return number


def _permission(value: Any, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise _fail(path, "a permission id (string or non-negative integer)", value)


def _origins(value: Any, path: str) -> tuple[str, ...]:
    expected = 'a list of origins such as ["https://intranet.example.com"]'
    if not isinstance(value, list):
        raise _fail(path, expected, value)
    origins = []
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(r"https?://[^/\s]+", item.strip(), re.I):
            raise _fail(path, expected, item)
        origins.append(item.strip().rstrip("/").lower())
    return tuple(origins)


def _keywords(value: Any, path: str) -> tuple[str, ...]:
    expected = 'a non-empty list of single words such as ["STOP", "QUIT"]'
    if not isinstance(value, list) or not value:
        raise _fail(path, expected, value)
    words: list[str] = []
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(r"\w+", item.strip()):
            raise _fail(path, expected, item)
        if item.strip().upper() not in words:
            words.append(item.strip().upper())
    return tuple(words)


def _db_port(value: Any, path: str) -> int:
    port = _integer(0, 65535, "an integer port 0-65535 (0 means 5432)")(value, path)
    # The Go service's config used 0 for "driver default".
    return port or 5432


def _options(value: Any, path: str) -> OptionMap:
    obj = _object(value, path)
    seen: dict[str, str] = {}
    for key, item in obj.items():
        key_path = _join(path, key)
        if key.lower() in seen:
            raise _repeated(key_path, seen[key.lower()], key)
        seen[key.lower()] = key
        if not isinstance(item, str):
            raise _fail(key_path, "a string", item, secret=True)
    return OptionMap(obj.items())


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_UNIT = "|".join(sorted(_DURATION_UNITS, key=len, reverse=True))
_DURATION_PART = re.compile(rf"({_NUMBER})\s*({_UNIT})\s*")
_DURATION = re.compile(rf"(?:{_NUMBER}\s*(?:{_UNIT})\s*)+")


def parse_duration(value: Any, key: str) -> float:
    """Return a positive duration in seconds from minutes (number or digits) or "1h30m"."""
    expected = 'a duration such as "15m", "30s" or "1h30m", or a number of minutes'
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = (_finite(value) or 0.0) * 60.0
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text) * 60.0
        elif _DURATION.fullmatch(text):
            seconds = sum(
                float(number) * _DURATION_UNITS[unit]
                for number, unit in _DURATION_PART.findall(text)
            )
        else:
            raise _fail(key, expected, value)
    else:
        raise _fail(key, expected, value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise _fail(key, "a positive duration", value)
    return seconds


# --- sections: the accepted keys, their canonical spelling, and where each one lands ---


@dataclass(frozen=True)
class _Key:
    names: tuple[str, ...]  # canonical spelling first; later ones are accepted aliases
    attr: str
    parse: Parser


def _key(names: str | tuple[str, ...], attr: str, parse: Parser) -> _Key:
    return _Key(names if isinstance(names, tuple) else (names,), attr, parse)


def _section(cls: type, keys: Iterable[_Key]) -> Parser:
    keys = tuple(keys)
    by_name = {name.lower(): key for key in keys for name in key.names}

    def parse(value: Any, path: str) -> Any:
        obj = _object(value, path)
        given: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name, item in obj.items():
            key_path = _join(path, name)
            key = by_name.get(name.lower())
            if key is None:
                _warn_unknown(key_path, name, by_name)
                continue
            if key.attr in given:
                raise _repeated(key_path, given[key.attr], name)
            given[key.attr] = name
            values[key.attr] = key.parse(item, key_path)
        return cls(**values)

    return parse


# The unknown keys met while one config is parsed (config_from_mapping sets it).
_unknown_keys: contextvars.ContextVar[list[str]] = contextvars.ContextVar("unknown_keys")


def _warn_unknown(key_path: str, name: str, by_name: Mapping[str, _Key]) -> None:
    close = difflib.get_close_matches(name.lower(), list(by_name), n=1, cutoff=0.75)
    hint = f" (did you mean '{by_name[close[0]].names[0]}'?)" if close else ""
    warning = f"unknown config key '{key_path}' ignored{hint}"
    found = _unknown_keys.get(None)
    if found is not None:
        found.append(warning)


class _JSONObject(dict):
    """A decoded JSON object that remembers keys the file gave more than once."""

    repeated: tuple[str, ...] = ()


def _object_hook(pairs: list[tuple[str, Any]]) -> _JSONObject:
    obj = _JSONObject()
    repeated = []
    for key, value in pairs:
        if key in obj:
            repeated.append(key)
        obj[key] = value
    obj.repeated = tuple(repeated)
    return obj


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path or "configuration", "a JSON object", value, secret=True)
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(f"{path or 'configuration'}: keys must be strings", key=path)
    for name in getattr(value, "repeated", ()):
        raise _repeated(_join(path, name), name, name)
    return value


def _join(path: str, name: str) -> str:
    shown = name if name.isprintable() else json.dumps(name)
    return f"{path}.{shown}" if path else shown


def _repeated(path: str, first: str, second: str) -> ConfigError:
    spellings = "" if first == second else f" (as '{first}' and '{second}')"
    return ConfigError(f"config key '{path}' is given twice{spellings}", key=path)


_PROVIDER = _section(
    ProviderSettings,
    [
        _key("name", "name", _string(non_empty=True)),
        _key("enabled", "enabled", _boolean),
        _key("token", "token", _string(secret=True)),
        _key("maxMessageSegments", "max_message_segments", _integer(1, None, "a positive integer")),
        _key("maxBatchSize", "max_batch_size", _integer(1, None, "a positive integer")),
        _key("countries", "countries", _countries),
        _key("maxRecipients", "max_recipients", _integer(1, None, "a positive integer")),
        _key("url", "url", _optional(_url)),
        _key("from", "sender", _optional(_string())),
        _key("timeout", "timeout", _number(0)),
        _key("retries", "retries", _integer(0, None, "an integer >= 0")),
        _key("mobileOnly", "mobile_only", _boolean),
        _key("smartEncoding", "smart_encoding", _boolean),
        _key("waitSeconds", "wait_seconds", _number(0, inclusive=True)),
        _key(
            "maxConcurrentRequests",
            "max_concurrent_requests",
            _integer(1, 64, "an integer from 1 to 64"),
        ),
        _key("retryWindow", "retry_window", parse_duration),
        _key("bulkThreshold", "bulk_threshold", _integer(1, None, "a positive integer")),
        _key("custom1", "custom1", _string(secret=True)),
        _key("custom2", "custom2", _string(secret=True)),
        _key("custom3", "custom3", _string(secret=True)),
        _key("maxRequestsPerSecond", "max_requests_per_second", _optional(_number(0))),
        _key("options", "options", _options),
        # Several providers (smsProviders, or smsProvider beside them).
        _key("id", "id", _optional(_string(non_empty=True))),
        _key("weight", "weight", _number(0, inclusive=True)),
        _key("prefixes", "prefixes", _prefixes),
    ],
)


def _provider_list(value: Any, path: str) -> tuple[ProviderSettings, ...]:
    """smsProviders: a non-empty list of smsProvider entries, each with its routing rules."""
    if not isinstance(value, list) or not value:
        raise _fail(path, "a non-empty list of provider objects like smsProvider", value, True)
    entries = []
    for index, item in enumerate(value):
        entry_path = f"{path}[{index}]"
        settings = _PROVIDER(item, entry_path)
        if "name" not in {key.lower() for key in item}:
            raise ConfigError(f"{entry_path}.name: every provider needs a name", key=entry_path)
        # Countries named by an entry are the numbers it serves; without them it serves all.
        given = "countries" in {key.lower() for key in item}
        entries.append(
            dataclasses.replace(settings, route_countries=settings.countries if given else ())
        )
    return tuple(entries)


_HEALTH = _section(
    HealthSettings,
    [
        _key("window", "window", parse_duration),
        _key("maxFailureRate", "max_failure_rate", _fraction),
        _key("minCalls", "min_calls", _integer(1, None, "a positive integer")),
        _key("maxTimeToFinal", "max_time_to_final", parse_duration),
        _key("minFinals", "min_finals", _integer(1, None, "a positive integer")),
        _key("recoveryStep", "recovery_step", _fraction),
        _key("recoveryInterval", "recovery_interval", parse_duration),
    ],
)

_AUTH = _section(
    AuthSettings,
    [
        _key("service", "service", _choice("serviceauth", "apikey")),
        _key("enabled", "enabled", _boolean),
        _key("url", "url", _url),
        _key("permission", "permission", _permission),
        _key("cacheSeconds", "cache_seconds", _number(0, inclusive=True)),
        _key("timeout", "timeout", _number(0)),
        _key("adminPermission", "admin_permission", _optional(_permission)),
        _key("allowedOrigins", "allowed_origins", _origins),
        _key("sessionSecret", "session_secret", _session_secret),
    ],
)

_DELIVERY_STATUS = _section(
    DeliveryStatusSettings,
    [
        _key("enabled", "enabled", _boolean),
        # "updateInverval" is the Go service's own (misspelt) key; old files use it.
        _key(("updateInterval", "updateInverval"), "update_interval", parse_duration),
        _key("window", "window", parse_duration),
        _key("callbackUrl", "callback_url", _optional(_callback_url)),
        _key("callbackSecret", "callback_secret", _webhook_secret),
        _key("allowPrivateCallbacks", "allow_private_callbacks", _boolean),
        _key("callbackTimeout", "callback_timeout", _number(0)),
        _key(
            "callbackConcurrency",
            "callback_concurrency",
            _integer(1, 64, "an integer from 1 to 64"),
        ),
        _key(
            "retentionDays",
            "retention_days",
            _optional(_integer(1, None, "a whole number of days >= 1")),
        ),
    ],
)

_INBOUND = _section(
    InboundSettings,
    [
        _key("callbackUrl", "callback_url", _optional(_url)),
        _key("optOutKeywords", "opt_out_keywords", _keywords),
        _key("optInKeywords", "opt_in_keywords", _keywords),
    ],
)

_LIMIT = _optional(_integer(0, None, "a whole number >= 0, or null for no limit"))
_LIMITS = _section(
    Limits,
    [
        _key("requestsPerMinute", "requests_per_minute", _LIMIT),
        _key("recipientsPerDay", "recipients_per_day", _LIMIT),
        _key("internationalPerDay", "international_per_day", _LIMIT),
    ],
)

_DATABASE = _section(
    DatabaseSettings,
    [
        _key("Driver", "driver", _choice("embedded", "postgres")),
        _key("Host", "host", _string()),
        _key("Port", "port", _db_port),
        _key("Database", "database", _string(non_empty=True)),
        _key("User", "user", _string()),
        _key("Password", "password", _string(secret=True)),
        _key("SSL", "ssl", _boolean),
        _key("dataDir", "data_dir", _string(non_empty=True)),
        _key("preparedStatements", "prepared_statements", _boolean),
    ],
)

_CONFIG = _section(
    Config,
    [
        _key("HTTPPort", "http_port", _integer(1, 65535, "an integer port 1-65535")),
        _key("Logfile", "logfile", _string()),
        _key("LogFormat", "log_format", _choice("text", "json")),
        _key("MaxBodyBytes", "max_body_bytes", _integer(1, None, "a positive integer")),
        _key("smsProvider", "provider", _PROVIDER),
        _key("smsProviders", "providers", _provider_list),
        _key("providerHealth", "health", _HEALTH),
        _key("authentication", "authentication", _AUTH),
        _key("deliveryStatus", "delivery_status", _DELIVERY_STATUS),
        _key("inbound", "inbound", _INBOUND),
        _key("limits", "limits", _LIMITS),
        _key("dbConnection", "database", _DATABASE),
    ],
)


# --- entry points ---


def config_from_mapping(
    data: Mapping[str, Any], database_url: str | None = None, base_dir: str | None = None
) -> Config:
    """Validate decoded config data into a Config; raise ConfigError on the first problem.

    A relative `dataDir` is taken from `base_dir` (the config file's folder), so every
    command finds the same database wherever it is run from.
    """
    if not isinstance(data, Mapping):
        kind = "a list" if isinstance(data, list) else _show(data)
        raise ConfigError(f"configuration: the top level must be a JSON object, got {kind}")
    unknown: list[str] = []
    token = _unknown_keys.set(unknown)
    try:
        config = _CONFIG(data, "")
    finally:
        _unknown_keys.reset(token)
    both = set(config.inbound.opt_out_keywords) & set(config.inbound.opt_in_keywords)
    if both:
        raise ConfigError(
            f"inbound: {', '.join(sorted(both))} is both in optOutKeywords and in optInKeywords",
            key="inbound",
        )
    status = config.delivery_status
    for key, url in (
        ("deliveryStatus.callbackUrl", status.callback_url),
        ("inbound.callbackUrl", config.inbound.callback_url),
    ):
        if url and not status.callback_secret:
            raise ConfigError(
                f"{key} needs deliveryStatus.callbackSecret: webhooks are signed "
                "(flask webhooks secret makes one)",
                key="deliveryStatus.callbackSecret",
            )
    config = _with_providers(config, any(key.lower() == "smsprovider" for key in data))
    database = config.database
    if base_dir is not None:
        data_dir = os.path.join(base_dir, os.path.expanduser(database.data_dir))
        database = dataclasses.replace(database, data_dir=os.path.normpath(data_dir))
    return dataclasses.replace(
        config,
        database=database,
        database_url=database_url if database_url is not None else config.database_url,
        warnings=tuple(unknown),
    )


def _with_providers(config: Config, has_single: bool) -> Config:
    """Put smsProvider (when given) and smsProviders in one list, the first being the
    provider whose settings hold for the whole service; check their names are unique.

    Numbers are accepted for every country a provider names; smsProvider's countries are
    also the numbers it serves, as they always were."""
    if not config.providers:
        return config
    first = (dataclasses.replace(config.provider, route_countries=config.provider.countries),)
    providers = (first if has_single else ()) + config.providers
    paths = (["smsProvider"] if has_single else []) + [
        f"smsProviders[{n}]" for n in range(len(config.providers))
    ]
    seen: dict[str, str] = {}
    for path, settings in zip(paths, providers, strict=True):
        first = seen.get(settings.key.lower())
        if first is not None:
            raise ConfigError(
                f"{path}: the provider name {settings.key!r} is already {first}'s; "
                'give one of them an "id" of its own',
                key=f"{path}.id",
            )
        seen[settings.key.lower()] = path
    countries: list[str] = []
    for settings in providers:
        countries += [code for code in settings.route_countries if code not in countries]
    primary = dataclasses.replace(
        providers[0],
        countries=tuple(countries) or ("ZA",),
        enabled=any(settings.enabled for settings in providers),
    )
    return dataclasses.replace(config, provider=primary, providers=providers)


def strip_comments(text: str) -> str:
    """Blank out // and /* */ comments outside JSON strings, keeping every line and column."""

    def blank(match: re.Match[str]) -> str:
        token = match.group()
        if token.startswith('"'):
            return token
        if token.startswith("/*") and (len(token) < 4 or not token.endswith("*/")):
            line, column = _position(text, match.start())
            raise ConfigError(f"unterminated /* comment starting at line {line} column {column}")
        return re.sub(r"[^\r\n]", " ", token)

    return _TOKENS.sub(blank, text)


# A string (escapes included), a line comment, or a block comment running to its end.
_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|/\*.*?(?:\*/|\Z)', re.S)


def config_from_text(
    text: str,
    source: str = "<string>",
    database_url: str | None = None,
    base_dir: str | None = None,
) -> Config:
    """Parse config.json text (// and /* */ comments allowed) into a Config."""
    try:
        doc = strip_comments(text)
        if not doc.strip():
            raise ConfigError("the file is empty; expected a JSON object")
        data = json.loads(doc, object_pairs_hook=_object_hook, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {source}: {_describe_json_error(err, doc)}") from None
    except ConfigError as err:
        raise ConfigError(f"config file {source}: {err}") from None
    if not isinstance(data, Mapping):
        kind = "a list" if isinstance(data, list) else _show(data)
        raise ConfigError(f"config file {source}: the top level must be a JSON object, got {kind}")
    return config_from_mapping(data, database_url, base_dir)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the config file (argument, else $MESSAGING_CONFIG, else ./config.json)."""
    env = os.environ if environ is None else environ
    source = os.fspath(path) if path is not None else (env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        # utf-8-sig: files saved by Windows editors often start with a BOM.
        with open(source, encoding="utf-8-sig") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {source}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {source}: {err.strerror}") from None
    base_dir = os.path.dirname(os.path.abspath(source))
    return config_from_text(text, source, _database_url(env), base_dir)


def _database_url(env: Mapping[str, str]) -> str | None:
    url = env.get(DATABASE_URL_ENV, "").strip()
    if not url:
        return None
    if not re.match(r"postgres(?:ql)?://", url, re.I):
        # Never echo it: the URL normally carries the password.
        raise ConfigError(
            f"{DATABASE_URL_ENV}: expected a libpq URL such as postgresql://user@host:5432/db",
            key=DATABASE_URL_ENV,
        )
    return url


def _no_constant(name: str) -> Any:
    raise ConfigError(f"{name} is not valid JSON; write a number")


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - text.rfind("\n", 0, index)


def _describe_json_error(err: json.JSONDecodeError, doc: str) -> str:
    # JSON forbids a comma before } or ]; say so rather than "Expecting value".
    if err.pos < len(doc) and doc[err.pos] in "}]":
        before = doc[: err.pos].rstrip()
        if before.endswith(","):
            line, column = _position(doc, len(before) - 1)
            return f"invalid JSON: trailing comma at line {line} column {column}"
    return f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
