"""Settings from GENQ_* variables: a value that cannot work is refused in one line naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genq.config import Settings
from genq.errors import InvalidInput


@pytest.mark.parametrize("name, value, words", [
    ("GENQ_PORT", "abc", "GENQ_PORT must be an integer from 1 to 65535, not 'abc'"),
    ("GENQ_PORT", "99999", "GENQ_PORT must be an integer from 1 to 65535"),
    ("GENQ_LEASE_SECONDS", "0", "GENQ_LEASE_SECONDS must be a number at least 1"),
    ("GENQ_LEASE_SECONDS", "-5", "GENQ_LEASE_SECONDS must be a number at least 1"),
    ("GENQ_MAX_ATTEMPTS", "1.5", "GENQ_MAX_ATTEMPTS must be an integer at least 1"),
    ("GENQ_MAX_UPLOAD_BYTES", "-1", "GENQ_MAX_UPLOAD_BYTES"),
    ("GENQ_CACHE_MB", "lots", "GENQ_CACHE_MB must be an integer"),
    ("GENQ_MODEL_CACHE_MB", "x", "GENQ_MODEL_CACHE_MB"),
    ("GENQ_USAGE_HALF_LIFE_HOURS", "nan", "GENQ_USAGE_HALF_LIFE_HOURS must be a number"),
    ("GENQ_PREEMPT_MIN_RUN_SECONDS", "inf", "GENQ_PREEMPT_MIN_RUN_SECONDS"),
    ("GENQ_PREEMPT_MIN_RUN_SECONDS", "abc", "GENQ_PREEMPT_MIN_RUN_SECONDS must be a number, not 'abc'"),
    ("GENQ_CPU_BF16", "yes", "GENQ_CPU_BF16 must be 0 or 1 .unset: detected from the CPU., not 'yes'"),
])
def test_a_value_that_cannot_work_is_refused_naming_the_variable(monkeypatch, tmp_path, name, value, words):
    monkeypatch.setenv("GENQ_HOME", str(tmp_path))
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput, match=words):
        Settings.from_env()


def test_defaults_and_good_values(monkeypatch, tmp_path):
    monkeypatch.setenv("GENQ_HOME", str(tmp_path))
    monkeypatch.setenv("GENQ_PREEMPT_MIN_RUN_SECONDS", "-1")  # negative: never preempt
    monkeypatch.setenv("GENQ_LEASE_SECONDS", " 3 ")
    settings = Settings.from_env()
    assert (settings.port, settings.lease_seconds, settings.preempt_min_run_seconds) == (8000, 3.0, -1.0)


def test_the_cli_says_it_in_one_line_and_creates_nothing(tmp_path):
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "GENQ_HOME": str(home), "GENQ_LEASE_SECONDS": "0"}
    result = subprocess.run([sys.executable, "-m", "genq", "db", "upgrade"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == "error: GENQ_LEASE_SECONDS must be a number at least 1, not '0'"
    assert not home.exists()


@pytest.mark.parametrize("name", ["GENQ_HOME", "GENQ_ARTIFACTS"])
def test_a_file_where_a_folder_belongs_is_named(monkeypatch, tmp_path, name):
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("GENQ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(name, str(afile))
    with pytest.raises(InvalidInput, match=f"{name}: {afile} cannot be a folder"):
        Settings.from_env().ensure_dirs()


@pytest.mark.parametrize("name, value, words", [
    ("GENQ_DB_TCP_TIMEOUT_SECONDS", "abc", "GENQ_DB_TCP_TIMEOUT_SECONDS must be an integer at least 1, not 'abc'"),
    ("GENQ_DB_TCP_TIMEOUT_SECONDS", "0", "GENQ_DB_TCP_TIMEOUT_SECONDS must be an integer at least 1"),
    ("GENQ_DB_IDLE_TRANSACTION_SECONDS", "-1", "GENQ_DB_IDLE_TRANSACTION_SECONDS must be a number"),
])
def test_the_database_connections_settings_are_checked_too(monkeypatch, name, value, words):
    from genq.db.session import make_engine

    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput, match=words):
        make_engine("postgresql://nobody@127.0.0.1:1/none")  # refused before it connects
