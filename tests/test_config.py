"""Config loading: embedded defaults, ${ENV} interpolation, errors that name file and key."""

from __future__ import annotations

import pytest

from agent.config import load_config, parse_config
from agent.configtypes import ConfigError, Secret, parse_duration, parse_size


def test_embedded_defaults():
    cfg = load_config(None, env={})
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", 9464)
    assert cfg.server.max_body_bytes == 32 * 1024 * 1024
    assert cfg.server.auth_token is None
    assert cfg.rules is None  # the default pack
    assert cfg.labels.optional == []


def test_env_interpolation_with_defaults():
    cfg = parse_config({"server": {"auth_token": "${TOKEN}", "port": "${PORT:-9999}"},
                        "litellm": {"base_url": "http://${HOST:-localhost}:4000"}},
                       env={"TOKEN": "abc:{}#[]&*!"})
    assert cfg.server.auth_token == "abc:{}#[]&*!"
    assert isinstance(cfg.server.auth_token, Secret) and "abc" not in repr(cfg.server.auth_token)
    assert cfg.server.port == 9999
    assert cfg.litellm.base_url == "http://localhost:4000"


def test_missing_env_names_the_key(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("server:\n  auth_token: ${GW_TOKEN}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert str(path) in message and "server.auth_token" in message and "GW_TOKEN" in message


@pytest.mark.parametrize(("yaml_text", "key_path", "expected"), [
    ("server:\n  port: eighty\n", "server.port", "expected an integer"),
    ("server:\n  port: 70000\n", "server.port", "0-65535"),
    ("server:\n  prot: 80\n", "server.prot", "unknown key"),
    ("labels:\n  optional: [hashed_api_key, ssn]\n", "labels.optional[1]", "one of"),
    ("pipeline:\n  request_merge_window: soon\n", "pipeline.request_merge_window", "duration"),
    ("server:\n  max_body_bytes: huge\n", "server.max_body_bytes", "size"),
    ("server: [1, 2]\n", "server", "expected a mapping"),
])
def test_bad_values_name_file_key_and_expectation(tmp_path, yaml_text, key_path, expected):
    path = tmp_path / "gw.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.file == str(path)
    assert info.value.key_path == key_path
    assert expected in info.value.reason


def test_invalid_yaml_has_line_and_column(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("server:\n  port: [1,\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "line" in str(info.value) and str(path) in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_config("/nonexistent/gw.yaml", env={})


def test_units():
    assert parse_duration("500ms") == 0.5 and parse_duration("5m") == 300 and parse_duration(7) == 7
    assert parse_size("32MB") == 32_000_000 and parse_size("1MiB") == 1024 * 1024


def test_a_bad_secret_value_is_not_echoed():
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {"auth_token": ["hunter2-very-secret"]}}, env={})
    assert "hunter2" not in str(info.value) and "server.auth_token" in str(info.value)
