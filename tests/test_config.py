# ruff: noqa: W291, E501  (README_EXAMPLE below must keep the original file's trailing spaces)
"""Config loading: the Go service's own files load unchanged; every bad value fails clearly."""

import dataclasses
import json
import logging

import pytest

from messaging.config import (
    AuthSettings,
    Config,
    ConfigError,
    DatabaseSettings,
    DeliveryStatusSettings,
    ProviderSettings,
    config_from_mapping,
    config_from_text,
    load_config,
    parse_duration,
    strip_comments,
)
from tests.conftest import base_config

# The "Configuration" example of the Go service's README, byte for byte: tabs, // comments
# and trailing spaces included. Do not tidy it; that is what the test is about.
README_EXAMPLE = """{
	"HTTPPort": 2016,  			    // Port to bind to for the HTTP server
	"smsProvider": {
		"name": "MockProvider",		// Name of provider.  Will be used to determine function to call
		"enabled": true,			    // Enable or disable sending of SMS for testing
		"token": "12345",			// Auth token to use for sending
		"maxBatchSize": 500,  		// Max number of messages to send per batch 
		"custom1": "custom data",	// Custom field for SMS provider API implementation
		"custom2": "custom data",	// Custom field for SMS provider API implementation
		"custom3": "custom data"	// Custom field for SMS provider API implementation
	},
	"authentication": {
		"service": "serviceauth",	// Authentication system to use. Implement new service in auth.go 
		"enabled": false			// Enable or disable user authentication
	},
	"deliveryStatus": {
		"enabled": true,			// Enable or disable delivery status retrieval
		"updateInverval": 15		// Amount of minutes between retrieval of delivery status  
	},
	"dbConnection": {
		"Driver": "postgres",		// Only Postgres implemented at this stage
		"Host": "localhost",		// DB hostname
		"Port": 5432,				// DB port
		"Database": "messaging",	// Database name to use.  Will be created if does not exist
		"User": "",					// DB user. Ensure user has permission to create databases 
		"Password": "",				// DB user password
		"SSL": false				// Enable or disable SSL for DB access
	}
}
"""

# The sample config in the Go service's core/conf.go comment, byte for byte.
CODE_COMMENT_SAMPLE = """{
	"HTTPPort": 2012,
	"smsProvider": {
		"name": "Clickatell",
		"enabled": true,
		"token": "123abc",
		"maxMessageSegments": 1,
		"maxBatchSize": 600,
		"countries": ["ZA", "BW", "US"]
	},
	"authentication": {
		"service": "serviceauth",
		"enabled": true
	},
	"deliveryStatus": {
		"enabled": true,
		"updateInverval": 15
	},
	"dbConnection": {
		"Driver": "postgres",
		"Host": "localhost",
		"Port": 5432,
		"Database": "messaging",
		"User": "jim",
		"Password": "123",
		"SSL": false
	}
}
"""

SECRET = "Zq9-very-distinctive-secret-7Xw"


def write(tmp_path, text, name="config.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(data):
    with pytest.raises(ConfigError) as excinfo:
        config_from_mapping(data)
    return str(excinfo.value)


# --- the Go service's files ---


def test_original_readme_example_loads_unchanged(tmp_path):
    config = load_config(write(tmp_path, README_EXAMPLE), environ={})

    assert config.http_port == 2016
    assert config.provider.name == "MockProvider"
    assert config.provider.enabled is True
    assert config.provider.token == "12345"
    assert config.provider.max_batch_size == 500
    assert config.provider.custom1 == config.provider.custom3 == "custom data"
    assert config.authentication == AuthSettings(service="serviceauth", enabled=False)
    assert config.delivery_status == DeliveryStatusSettings(enabled=True, update_interval=900.0)
    assert config.database == DatabaseSettings(
        driver="postgres", user="", password="", ssl=False, data_dir=str(tmp_path / "var/pgdata")
    )
    assert config.database_url is None


def test_original_code_comment_sample_loads_unchanged(tmp_path):
    config = load_config(write(tmp_path, CODE_COMMENT_SAMPLE), environ={})

    assert config.http_port == 2012
    assert config.provider.name == "Clickatell"
    assert config.provider.token == "123abc"
    assert config.provider.max_message_segments == 1
    assert config.provider.max_batch_size == 600
    assert config.provider.countries == ("ZA", "BW", "US")
    assert config.authentication.enabled is True
    assert config.delivery_status.update_interval == 900.0
    assert (config.database.user, config.database.password) == ("jim", "123")


def test_go_logfile_key_and_string_update_interval_load():
    config = config_from_text(
        '{"Logfile": "messaging.log", "deliveryStatus": {"updateInverval": "15m"}}'
    )

    assert config.logfile == "messaging.log"
    assert config.delivery_status.update_interval == 900.0


def test_an_empty_object_gives_the_documented_defaults():
    config = config_from_mapping({})

    assert config == Config()
    assert config.http_port == 2016
    assert config.log_format == "text"
    assert config.max_body_bytes == 10 * 1024 * 1024
    assert config.provider == ProviderSettings()
    assert config.provider.countries == ("ZA",)
    assert config.provider.max_message_segments == 10
    assert config.provider.max_recipients == 100_000
    assert config.authentication.permission == "4"
    assert config.delivery_status.window == 1800.0
    assert config.database.driver == "embedded"
    assert config.database.data_dir == "var/pgdata"


def test_every_new_key_is_read_into_its_field():
    config = config_from_mapping(
        {
            "LogFormat": "JSON",
            "MaxBodyBytes": 1024,
            "smsProvider": {
                "maxRecipients": 50,
                "url": "https://api.example.com/",
                "from": "ACME",
                "timeout": 10,
                "retries": 0,
                "mobileOnly": False,
                "maxRequestsPerSecond": 2.5,
                "options": {"accountSid": "AC1"},
            },
            "authentication": {
                "service": "apikey",
                "url": "https://auth.example.com",
                "permission": 7,
                "cacheSeconds": 0,
                "timeout": 2.5,
            },
            "deliveryStatus": {"updateInterval": "30s", "window": "1h"},
            "dbConnection": {"Driver": "embedded", "dataDir": "/srv/pg"},
        }
    )

    assert (config.log_format, config.max_body_bytes) == ("json", 1024)
    provider = config.provider
    assert provider.max_recipients == 50
    assert provider.url == "https://api.example.com"
    assert provider.sender == "ACME"
    assert provider.timeout == 10.0 and isinstance(provider.timeout, float)
    assert (provider.retries, provider.mobile_only) == (0, False)
    assert provider.max_requests_per_second == 2.5
    assert dict(provider.options) == {"accountSid": "AC1"}
    assert config.authentication == AuthSettings(
        "apikey", False, "https://auth.example.com", "7", 0.0, 2.5
    )
    assert config.delivery_status == DeliveryStatusSettings(True, 30.0, 3600.0)
    assert config.database.data_dir == "/srv/pg"


def test_config_objects_are_frozen():
    config = config_from_mapping({"smsProvider": {"options": {"a": "b"}}})

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.http_port = 1


# --- keys ---


def test_keys_match_case_insensitively():
    config = config_from_mapping(
        {
            "httpport": 8080,
            "SMSProvider": {"MAXBATCHSIZE": 7, "Countries": ["bw"]},
            "Authentication": {"ENABLED": True},
            "deliverystatus": {"UpdateInverval": 1},
            "DBCONNECTION": {"driver": "POSTGRES", "port": 6543, "ssl": True},
        }
    )

    assert config.http_port == 8080
    assert config.provider.max_batch_size == 7
    assert config.provider.countries == ("BW",)
    assert config.authentication.enabled is True
    assert config.delivery_status.update_interval == 60.0
    assert (config.database.driver, config.database.port, config.database.ssl) == (
        "postgres",
        6543,
        True,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"HTTPPort": 1, "httpPort": 2},
            "config key 'httpPort' is given twice (as 'HTTPPort' and 'httpPort')",
        ),
        (
            {"deliveryStatus": {"updateInverval": 1, "updateInterval": 2}},
            "config key 'deliveryStatus.updateInterval' is given twice"
            " (as 'updateInverval' and 'updateInterval')",
        ),
        (
            {"smsProvider": {"options": {"apiKey": "a", "APIKEY": "b"}}},
            "config key 'smsProvider.options.APIKEY' is given twice (as 'apiKey' and 'APIKEY')",
        ),
    ],
)
def test_the_same_key_in_two_spellings_is_rejected(data, message):
    assert error_for(data) == message


def test_a_key_repeated_verbatim_in_the_file_is_rejected():
    with pytest.raises(ConfigError, match=r"config key 'smsProvider\.token' is given twice$"):
        config_from_text('{"smsProvider": {"token": "a", "token": "b"}}', source="c.json")


def warnings_for(data) -> tuple[str, ...]:
    return config_from_mapping(data).warnings


def test_unknown_key_loads_with_a_warning_naming_it():
    config = config_from_mapping({"smsProvider": {"name": "Clickatell", "colour": "red"}})

    assert config.provider.name == "Clickatell"
    assert config.warnings == ("unknown config key 'smsProvider.colour' ignored",)


def test_an_older_files_top_level_key_loads_with_a_warning():
    assert warnings_for({"smsEnabled": True, "HTTPPort": 2017}) == (
        "unknown config key 'smsEnabled' ignored",
    )


def test_a_misspelt_key_is_named_in_the_users_spelling_with_the_nearest_known_key():
    assert warnings_for({"DBConnection": {"Hostt": "db"}, "smsProvider": {"maxBatchSise": 5}}) == (
        "unknown config key 'DBConnection.Hostt' ignored (did you mean 'Host'?)",
        "unknown config key 'smsProvider.maxBatchSise' ignored (did you mean 'maxBatchSize'?)",
    )


def test_a_wrong_value_for_a_known_key_still_stops_start_up():
    with pytest.raises(ConfigError, match=r"smsProvider\.retries: expected"):
        config_from_mapping({"smsProvider": {"retries": "x", "colour": "red"}})


def test_unknown_keys_are_logged_once_each_at_start_up(make_app, caplog):
    config = base_config()
    config["smsEnabled"] = True
    service_log = logging.getLogger("messaging")  # it does not propagate to caplog's root
    service_log.addHandler(caplog.handler)
    try:
        make_app(config)
    finally:
        service_log.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if "smsEnabled" in r.getMessage()] == [
        "config: unknown config key 'smsEnabled' ignored"
    ]


def test_mobile_only_is_off_unless_set_as_the_original_behaved():
    assert config_from_mapping({}).provider.mobile_only is False
    assert config_from_mapping({"smsProvider": {"mobileOnly": True}}).provider.mobile_only


def test_a_relative_data_dir_is_taken_from_the_config_files_folder(tmp_path):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "config.json"
    path.write_text('{"dbConnection": {"dataDir": "var/pgdata"}}')
    assert load_config(path, environ={}).database.data_dir == str(tmp_path / "etc/var/pgdata")
    path.write_text('{"dbConnection": {"dataDir": "/srv/pg"}}')
    assert load_config(path, environ={}).database.data_dir == "/srv/pg"


# --- values ---


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"smsProvider": {"maxBatchSize": "abc"}},
            'smsProvider.maxBatchSize: expected a positive integer, got "abc"',
        ),
        (
            {"SMSProvider": {"MaxBatchSize": 0}},
            "SMSProvider.MaxBatchSize: expected a positive integer, got 0",
        ),
        (
            {"smsProvider": {"maxBatchSize": 500.0}},
            "smsProvider.maxBatchSize: expected a positive integer, got 500.0",
        ),
        ({"HTTPPort": 70000}, "HTTPPort: expected an integer port 1-65535, got 70000"),
        ({"HTTPPort": "2016"}, 'HTTPPort: expected an integer port 1-65535, got "2016"'),
        ({"HTTPPort": True}, "HTTPPort: expected an integer port 1-65535, got true"),
        ({"smsProvider": {"enabled": 1}}, "smsProvider.enabled: expected true or false, got 1"),
        (
            {"smsProvider": {"enabled": "true"}},
            'smsProvider.enabled: expected true or false, got "true"',
        ),
        ({"dbConnection": {"SSL": None}}, "dbConnection.SSL: expected true or false, got null"),
        (
            {"dbConnection": {"preparedStatements": "no"}},
            'dbConnection.preparedStatements: expected true or false, got "no"',
        ),
        (
            {"smsProvider": {"countries": ["ZAF"]}},
            "smsProvider.countries: expected a non-empty list of two-letter country codes such"
            ' as ["ZA"], got "ZAF"',
        ),
        (
            {"smsProvider": {"countries": "ZA"}},
            "smsProvider.countries: expected a non-empty list of two-letter country codes such"
            ' as ["ZA"], got "ZA"',
        ),
        (
            {"smsProvider": {"countries": []}},
            "smsProvider.countries: expected a non-empty list of two-letter country codes such"
            ' as ["ZA"], got []',
        ),
        (
            {"smsProvider": {"url": "api.example.com"}},
            "smsProvider.url: expected a URL starting with http:// or https://,"
            ' got "api.example.com"',
        ),
        ({"smsProvider": {"timeout": 0}}, "smsProvider.timeout: expected a number > 0, got 0"),
        (
            {"smsProvider": {"timeout": float("inf")}},
            "smsProvider.timeout: expected a number > 0, got Infinity",
        ),
        (
            {"smsProvider": {"timeout": 10**400}},
            "smsProvider.timeout: expected a number > 0, got " + "1" + "0" * 56 + "...",
        ),
        (
            {"smsProvider": {"timeout": "30"}},
            'smsProvider.timeout: expected a number > 0, got "30"',
        ),
        ({"smsProvider": {"retries": -1}}, "smsProvider.retries: expected an integer >= 0, got -1"),
        (
            {"smsProvider": {"maxRequestsPerSecond": 0}},
            "smsProvider.maxRequestsPerSecond: expected a number > 0, got 0",
        ),
        ({"smsProvider": {"name": ""}}, 'smsProvider.name: expected a non-empty string, got ""'),
        ({"smsProvider": []}, "smsProvider: expected a JSON object"),
        (
            {"authentication": {"service": "ldap"}},
            'authentication.service: expected one of "serviceauth", "apikey", got "ldap"',
        ),
        (
            {"authentication": {"permission": True}},
            "authentication.permission: expected a permission id (string or non-negative"
            " integer), got true",
        ),
        (
            {"authentication": {"cacheSeconds": -1}},
            "authentication.cacheSeconds: expected a number >= 0, got -1",
        ),
        (
            {"deliveryStatus": {"updateInverval": "soon"}},
            'deliveryStatus.updateInverval: expected a duration such as "15m", "30s" or'
            ' "1h30m", or a number of minutes, got "soon"',
        ),
        (
            {"dbConnection": {"Driver": "mysql"}},
            'dbConnection.Driver: expected one of "embedded", "postgres", got "mysql"',
        ),
        (
            {"dbConnection": {"Port": -1}},
            "dbConnection.Port: expected an integer port 0-65535 (0 means 5432), got -1",
        ),
        ({"LogFormat": "xml"}, 'LogFormat: expected one of "text", "json", got "xml"'),
        (
            {"MaxBodyBytes": 0},
            "MaxBodyBytes: expected a positive integer, got 0",
        ),
    ],
)
def test_a_wrong_value_fails_with_one_line_naming_the_key(data, message):
    error = error_for(data)

    assert error == message
    assert "\n" not in error


def test_error_carries_the_key_path():
    with pytest.raises(ConfigError) as excinfo:
        config_from_mapping({"smsProvider": {"retries": "x"}})

    assert excinfo.value.key == "smsProvider.retries"
    assert isinstance(excinfo.value, ValueError)


def test_a_key_with_a_newline_still_gives_a_one_line_warning():
    [warning] = warnings_for({"smsProvider": {"col\nour": 1}})

    assert warning.startswith("unknown config key 'smsProvider.\"col\\nour\"'")
    assert "\n" not in warning


def test_a_long_value_is_shortened_in_the_error():
    error = error_for({"HTTPPort": "x" * 500})

    assert len(error) < 120


def test_db_port_zero_means_the_postgres_default():
    config = config_from_mapping({"dbConnection": {"Port": 0}})

    assert config.database.port == 5432


def test_countries_are_upper_cased_and_deduplicated():
    config = config_from_mapping({"smsProvider": {"countries": ["za", " Bw ", "ZA"]}})

    assert config.provider.countries == ("ZA", "BW")


@pytest.mark.parametrize("blank", [None, ""])
def test_blank_optional_values_mean_not_set(blank):
    provider = config_from_mapping(
        {"smsProvider": {"url": blank, "from": blank, "maxRequestsPerSecond": None}}
    ).provider

    assert (provider.url, provider.sender, provider.max_requests_per_second) == (None, None, None)


def test_permission_may_be_a_string_or_an_integer():
    assert (
        config_from_mapping({"authentication": {"permission": 4}}).authentication.permission == "4"
    )
    assert (
        config_from_mapping({"authentication": {"permission": "bulk"}}).authentication.permission
        == "bulk"
    )


def test_options_are_a_string_map_looked_up_in_any_case():
    options = config_from_mapping(
        {"smsProvider": {"options": {"accountSid": "AC1"}}}
    ).provider.options

    assert options["accountsid"] == options["ACCOUNTSID"] == "AC1"
    assert "AccountSid" in options
    assert list(options) == ["accountSid"]
    assert options.get("missing") is None
    with pytest.raises(KeyError):
        options["missing"]


# --- durations ---


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (15, 900.0),
        (1, 60.0),
        (0.5, 30.0),
        ("15m", 900.0),
        ("30s", 30.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("90", 5400.0),
        ("2.5", 150.0),
        (" 15M ", 900.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1d", 86400.0),
    ],
)
def test_durations_are_read_as_seconds(value, seconds):
    assert parse_duration(value, "deliveryStatus.window") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "",
        "15x",
        "-5m",
        "m",
        "1h30",
        "0",
        "0s",
        0,
        -1,
        True,
        None,
        [15],
        float("inf"),
        10**400,
    ],
)
def test_bad_durations_are_rejected_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^deliveryStatus\.window: expected a ") as excinfo:
        parse_duration(value, "deliveryStatus.window")

    assert excinfo.value.key == "deliveryStatus.window"


# --- comments and JSON syntax ---


def test_comments_inside_strings_survive():
    text = '{"url": "http://x/*y*/", "a": "// no", "b": "q\\"//z"} // real /* comment */'

    assert json.loads(strip_comments(text)) == {"url": "http://x/*y*/", "a": "// no", "b": 'q"//z'}


def test_a_provider_url_is_not_mistaken_for_a_comment():
    config = config_from_text('{"smsProvider": {"url": "https://api.example.com/v1"} // note\n}')

    assert config.provider.url == "https://api.example.com/v1"


def test_block_comments_are_removed_keeping_lines_and_columns():
    text = '{\n  /* one\n  two */ "a": 1, // x\n  "b": 2\n}'
    stripped = strip_comments(text)

    assert json.loads(stripped) == {"a": 1, "b": 2}
    assert stripped.count("\n") == text.count("\n")
    assert [len(line) for line in stripped.split("\n")] == [len(line) for line in text.split("\n")]


def test_an_unterminated_block_comment_is_reported():
    with pytest.raises(ConfigError, match="unterminated /\\* comment starting at line 2 column 3"):
        config_from_text('{\n  /* "HTTPPort": 1\n}', source="c.json")


def test_invalid_json_reports_line_and_column_of_the_original_file():
    text = '{\n\t/* a\n\t   comment */\n\t"smsProvider": {"token": "' + SECRET + '" "name": "x"}\n}'

    with pytest.raises(ConfigError) as excinfo:
        config_from_text(text, source="conf.json")

    message = str(excinfo.value)
    assert message.startswith("config file conf.json: invalid JSON at line 4 column ")
    assert SECRET not in message
    assert "\n" not in message


def test_a_trailing_comma_is_rejected_with_a_clear_message():
    with pytest.raises(ConfigError) as excinfo:
        config_from_text('{\n\t"HTTPPort": 2016,   // port\n}', source="conf.json")

    assert (
        str(excinfo.value)
        == "config file conf.json: invalid JSON: trailing comma at line 2 column 18"
    )


@pytest.mark.parametrize("text", ["[1, 2]", '"config"', "3"])
def test_the_top_level_must_be_an_object(text):
    with pytest.raises(ConfigError, match="the top level must be a JSON object"):
        config_from_text(text)


def test_config_from_mapping_rejects_a_non_object():
    with pytest.raises(ConfigError, match="the top level must be a JSON object, got a list"):
        config_from_mapping([])


@pytest.mark.parametrize("text", ["", "  // only a comment\n"])
def test_an_empty_file_is_rejected(text):
    with pytest.raises(ConfigError, match="is empty; expected a JSON object"):
        config_from_text(text, source="conf.json")


def test_nan_is_rejected():
    with pytest.raises(ConfigError, match="NaN is not valid JSON"):
        config_from_text('{"smsProvider": {"timeout": NaN}}')


# --- secrets ---


SECRET_ERRORS = [
    {"smsProvider": {"token": [SECRET]}},
    {"smsProvider": {"token": {SECRET[:3]: SECRET}}},
    {"smsProvider": {"custom1": [SECRET]}},
    {"smsProvider": {"custom2": [SECRET]}},
    {"smsProvider": {"custom3": [SECRET]}},
    {"smsProvider": {"options": SECRET}},
    {"smsProvider": {"options": {"apiSecret": [SECRET]}}},
    {"smsProvider": {"options": {"callbackSecret": {"nested": SECRET}}}},
    {"dbConnection": {"Password": [SECRET]}},
    {"dbConnection": {"Password": SECRET, "Port": "x"}},
    {"smsProvider": {"token": SECRET, "custom1": SECRET, "retries": "x"}},
]


@pytest.mark.parametrize("data", SECRET_ERRORS)
def test_secret_values_never_appear_in_errors(data):
    error = error_for(data)

    assert SECRET not in error
    assert SECRET[:12] not in error


def test_the_secret_check_would_catch_a_leak():
    # The same value under a non-secret key is shown, so the assertions above can fail.
    assert SECRET[:12] in error_for({"smsProvider": {"name": [SECRET]}})


def test_secret_values_never_appear_in_repr():
    secrets = {"token": SECRET, "custom1": SECRET, "custom2": SECRET, "custom3": SECRET}
    config = config_from_mapping(
        {
            "smsProvider": {**secrets, "options": {"apiSecret": SECRET}},
            "dbConnection": {"Password": SECRET},
        },
        database_url=f"postgresql://u:{SECRET}@db/messaging",
    )

    for text in (repr(config), str(config), repr(config.provider), repr(config.provider.options)):
        assert SECRET not in text
    assert "apiSecret" in repr(config.provider.options)
    assert config.provider.token == config.database.password == SECRET
    assert config.provider.options["apiSecret"] == SECRET


def test_a_bad_database_url_is_rejected_without_echoing_it(tmp_path):
    path = write(tmp_path, "{}")

    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={"MESSAGING_DATABASE_URL": f"mysql://u:{SECRET}@h/db"})

    assert str(excinfo.value).startswith("MESSAGING_DATABASE_URL: expected a libpq URL")
    assert SECRET not in str(excinfo.value)


# --- files and environment ---


def test_the_path_argument_wins_over_the_environment(tmp_path):
    chosen = write(tmp_path, '{"HTTPPort": 1}', "chosen.json")
    other = write(tmp_path, '{"HTTPPort": 2}', "other.json")

    config = load_config(chosen, environ={"MESSAGING_CONFIG": str(other)})

    assert config.http_port == 1


def test_messaging_config_names_the_file_when_no_path_is_given(tmp_path, monkeypatch):
    other = write(tmp_path, '{"HTTPPort": 2}', "other.json")
    write(tmp_path, '{"HTTPPort": 3}')
    monkeypatch.chdir(tmp_path)

    assert load_config(environ={"MESSAGING_CONFIG": str(other)}).http_port == 2


def test_config_json_in_the_working_directory_is_the_default(tmp_path, monkeypatch):
    write(tmp_path, '{"HTTPPort": 3}')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MESSAGING_CONFIG", str(tmp_path / "ignored-when-environ-is-given.json"))

    assert load_config(environ={}).http_port == 3
    assert load_config(environ={"MESSAGING_CONFIG": ""}).http_port == 3


def test_load_config_reads_os_environ_by_default(tmp_path, monkeypatch):
    path = write(tmp_path, '{"HTTPPort": 4}', "env.json")
    monkeypatch.setenv("MESSAGING_CONFIG", str(path))
    monkeypatch.setenv("MESSAGING_DATABASE_URL", "postgresql://localhost/messaging")

    config = load_config()

    assert config.http_port == 4
    assert config.database_url == "postgresql://localhost/messaging"


def test_messaging_database_url_overrides_the_database(tmp_path):
    path = write(tmp_path, README_EXAMPLE)
    url = f"postgres://app:{SECRET}@db.internal:5433/sms"

    config = load_config(path, environ={"MESSAGING_DATABASE_URL": url})

    assert config.database_url == url
    assert SECRET not in repr(config)
    assert load_config(path, environ={"MESSAGING_DATABASE_URL": ""}).database_url is None


def test_a_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.json"

    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})

    assert str(excinfo.value) == f"config file not found: {path}"


def test_a_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, environ={})


def test_a_file_saved_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + README_EXAMPLE.encode())

    assert load_config(path, environ={}).http_port == 2016


def test_a_file_that_is_not_utf8_is_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"Logfile": "\xff"}')

    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path, environ={})


def test_a_bad_value_in_a_file_names_the_key(tmp_path):
    path = write(tmp_path, README_EXAMPLE.replace('"maxBatchSize": 500', '"maxBatchSize": "abc"'))

    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})

    assert str(excinfo.value) == 'smsProvider.maxBatchSize: expected a positive integer, got "abc"'
