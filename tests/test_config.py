"""Settings precedence: an explicit argument > an NB2PROD_*/MLFLOW_* variable > [tool.nb2prod] > default;
and the project home is found like git finds its root."""

from __future__ import annotations

from pathlib import Path

import pytest

from nb2prod.config import STATE_DIR, find_home, load_settings
from nb2prod.exceptions import ConfigError

_VARS = (
    "NB2PROD_HOME",
    "MLFLOW_TRACKING_URI",
    "NB2PROD_EXPERIMENT",
    "NB2PROD_STRICT",
    "NB2PROD_ROUNDTRIP_ROWS",
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "proj"
    (root / "nb" / "deep").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "p"\n\n[tool.nb2prod]\ntracking_uri = "sqlite:///from-pyproject.db"\n'
        'experiment = "from-pyproject"\nstrict = true\nroundtrip_rows = 50\nfuture_key = 1\n',
        encoding="utf-8",
    )
    return root


def test_defaults_without_a_tool_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(tmp_path)
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve() / STATE_DIR / 'mlflow.db'}"
    assert (settings.experiment, settings.strict, settings.roundtrip_rows) == ("default", False, 200)
    assert settings.extra == {}


def test_pyproject_beats_the_default_and_keeps_unknown_keys(home: Path) -> None:
    settings = load_settings(home)
    assert settings.tracking_uri == "sqlite:///from-pyproject.db"
    assert (settings.experiment, settings.strict, settings.roundtrip_rows) == ("from-pyproject", True, 50)
    assert settings.extra == {"future_key": 1}


def test_environment_beats_pyproject(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    monkeypatch.setenv("NB2PROD_EXPERIMENT", "from-env")
    monkeypatch.setenv("NB2PROD_STRICT", "0")
    monkeypatch.setenv("NB2PROD_ROUNDTRIP_ROWS", "7")
    settings = load_settings(home)
    assert settings.tracking_uri == "sqlite:///from-env.db"
    assert (settings.experiment, settings.strict, settings.roundtrip_rows) == ("from-env", False, 7)


def test_argument_beats_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    monkeypatch.setenv("NB2PROD_EXPERIMENT", "from-env")
    monkeypatch.setenv("NB2PROD_STRICT", "0")
    settings = load_settings(home, tracking_uri="sqlite:///arg.db", experiment="arg", strict=True)
    assert (settings.tracking_uri, settings.experiment, settings.strict) == ("sqlite:///arg.db", "arg", True)


def test_home_is_the_nearest_marked_parent_and_the_variable_overrides(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_home(home / "nb" / "deep") == home.resolve()
    unmarked = tmp_path / "elsewhere"
    unmarked.mkdir()
    assert find_home(unmarked) == unmarked.resolve()
    monkeypatch.setenv("NB2PROD_HOME", str(unmarked))
    assert find_home(home / "nb") == unmarked.resolve()


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("NB2PROD_STRICT", "maybe", "is not a boolean"),
        ("NB2PROD_ROUNDTRIP_ROWS", "many", "is not an integer"),
        ("NB2PROD_ROUNDTRIP_ROWS", "0", "must be at least 1"),
    ],
)
def test_bad_values_are_config_errors_naming_the_setting(
    home: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=message):
        load_settings(home)
