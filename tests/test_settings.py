"""One settings object (store/settings.py): flag, then environment, then config file,
then default; a bad value is a usage error (exit 2) naming the key, value and what is
allowed, before anything is opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from console.cli import main
from store.errors import ConfigError
from store.settings import CONFIG_ENV, DB_ENV, load_settings


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_flag_beats_environment_beats_config_file_beats_default(tmp_path):
    path = config(
        tmp_path,
        'db = "sqlite:////from/file.db"\npoll_interval = 0.5\n'
        "[scheduler]\npool_size = 3\nlease_ttl = 4.5\n[postgres]\nconnect_timeout = 3\n",
    )
    env = {DB_ENV: "sqlite:////from/env.db", "CC_SCHEDULER_POOL_SIZE": "4"}
    flagged = load_settings(db="sqlite:////from/flag.db", pool_size=5, environ=env, path=path)
    assert flagged.db == "sqlite:////from/flag.db"
    assert flagged.scheduler.pool_size == 5
    from_env = load_settings(environ=env, path=path)
    assert from_env.db == "sqlite:////from/env.db"
    assert from_env.scheduler.pool_size == 4
    from_file = load_settings(environ={}, path=path)
    assert from_file.db == "sqlite:////from/file.db"
    assert from_file.scheduler.pool_size == 3
    assert from_file.scheduler.lease_ttl == 4.5
    assert from_file.poll_interval == 0.5
    assert from_file.connect_timeout == 3
    default = load_settings(environ={}, path=tmp_path / "absent.toml")
    assert default.db.endswith("/campaign-console/workspace.db")
    assert default.scheduler.pool_size == 2
    assert default.poll_interval == 1.0
    assert default.role == "operator"
    assert default.connect_timeout == 10


def test_read_only_flag_or_config_role_makes_a_read_only_actor(tmp_path):
    path = config(tmp_path, 'role = "read_only"\n')
    assert load_settings(environ={}, path=path).read_only
    assert load_settings(read_only=True, environ={}, path=tmp_path / "none.toml").read_only
    assert not load_settings(environ={}, path=tmp_path / "none.toml").read_only


def test_bare_path_means_an_sqlite_file(tmp_path):
    settings = load_settings(db=str(tmp_path / "x.db"), environ={}, path=tmp_path / "none")
    assert settings.db == f"sqlite:///{tmp_path / 'x.db'}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('poll_interval = "fast"\n', ["poll_interval", "'fast'", "a number > 0"]),
        ('role = "admin"\n', ["role", "'admin'", "'operator' or 'read_only'"]),
        ("[scheduler]\npool_size = 0\n", ["scheduler.pool_size", "0", "a whole number ≥ 1"]),
        ("[scheduler]\nlease_ttl = -1\n", ["scheduler.lease_ttl", "-1", "a number > 0"]),
        ("[postgres]\nconnect_timeout = true\n", ["postgres.connect_timeout", "True"]),
        ("db = 5\n", ["db", "5", "a non-empty string"]),
        ("keys = 3\n", ["keys", "must be a table"]),
        ("poll_interval = \n", ["cannot read config file"]),
    ],
)
def test_bad_config_value_exits_2_naming_key_value_and_what_is_allowed(
    tmp_path, monkeypatch, capsys, text, expected
):
    monkeypatch.setenv(CONFIG_ENV, str(config(tmp_path, text)))
    db = tmp_path / "never.db"
    code = main(["--db", str(db), "campaign", "list"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unexpected" not in err
    for part in expected:
        assert part in err
    assert not db.exists()  # refused before anything was opened


def test_bad_scheduler_variable_exits_2_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CONFIG_ENV, os.devnull)
    monkeypatch.setenv("CC_SCHEDULER_POOL_SIZE", "many")
    code = main(["--db", str(tmp_path / "x.db"), "status"])
    err = capsys.readouterr().err
    assert code == 2
    assert "CC_SCHEDULER_POOL_SIZE = 'many'" in err and "a whole number ≥ 1" in err


def test_load_settings_raises_config_error_for_the_store(tmp_path):
    with pytest.raises(ConfigError, match="poll_interval = 0 is not allowed"):
        load_settings(environ={}, path=config(tmp_path, "poll_interval = 0\n"))


def test_a_config_file_named_by_the_variable_must_exist(tmp_path, monkeypatch, capsys):
    """A typo in CAMPAIGN_CONSOLE_CONFIG silently dropped the file, and with it a
    `role = "read_only"` (an operator again). Only the default file may be absent."""
    config(tmp_path, 'role = "read_only"\n')
    db = tmp_path / "x.db"
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "config.tmol"))
    code = main(["--db", str(db), "init"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{CONFIG_ENV} names {tmp_path / 'config.tmol'}, which does not exist" in err
    assert not db.exists()  # refused before anything was opened
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "config.toml"))
    assert load_settings().read_only
    monkeypatch.setenv(CONFIG_ENV, os.devnull)  # "no config file", said explicitly
    assert not load_settings().read_only
