"""Settings and the project home.

Precedence, highest first: an explicit argument, an ``NB2PROD_*`` environment
variable, ``[tool.nb2prod]`` in the project's ``pyproject.toml``, the default.

The project home is found like git finds its root: the nearest parent of the
working directory whose ``pyproject.toml`` has a ``[tool.nb2prod]`` table,
else the working directory itself. ``NB2PROD_HOME`` overrides. Everything
nb2prod writes by default lives in ``<home>/.nb2prod/``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nb2prod.exceptions import ConfigError

STATE_DIR = ".nb2prod"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def find_home(start: Path | None = None) -> Path:
    """Return the project home: ``NB2PROD_HOME``, else the nearest marked parent, else ``start``."""
    env = os.environ.get("NB2PROD_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if _tool_table(candidate / "pyproject.toml") is not None:
            return candidate
    return here


def _tool_table(pyproject: Path) -> dict[str, Any] | None:
    if not pyproject.is_file():
        return None
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    table = data.get("tool", {}).get("nb2prod")
    return table if isinstance(table, dict) else None


def _parse_bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean", hint=f"set {name} to 1 or 0")


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one project.

    Attributes:
        home: The project home.
        tracking_uri: Where MLflow runs and the registry live.
        experiment: Default MLflow experiment for a capture session.
        strict: Raise on store failures in magics instead of warning.
        roundtrip_rows: Rows used to compare a saved model with the live one.
        warm_roundtrip: Start the fresh round-trip process at ``start``, ahead of the model, so
            it has its imports and store ready (``NB2PROD_WARM_ROUNDTRIP=0`` turns it off).
        first_champion: The first registered version of a model becomes its ``champion``
            (``NB2PROD_FIRST_CHAMPION=0`` turns it off).
        extra: Any other ``[tool.nb2prod]`` keys, kept for later features.
    """

    home: Path
    tracking_uri: str
    experiment: str = "default"
    strict: bool = False
    roundtrip_rows: int = 200
    warm_roundtrip: bool = True
    first_champion: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.home / STATE_DIR

    @property
    def is_local_store(self) -> bool:
        return self.tracking_uri.startswith("sqlite:") or self.tracking_uri.startswith("file:")

    @property
    def artifact_root(self) -> Path:
        """Where artifacts of a local store go (never ``./mlruns`` of the cwd)."""
        return self.state_dir / "artifacts"

    @property
    def bentoml_home(self) -> Path:
        env = os.environ.get("BENTOML_HOME")
        return Path(env) if env else self.state_dir / "bentoml"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def load_settings(
    home: Path | str | None = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    strict: bool | None = None,
) -> Settings:
    """Resolve settings: argument > ``NB2PROD_*``/``MLFLOW_TRACKING_URI`` > pyproject > default."""
    root = Path(home).expanduser().resolve() if home is not None else find_home()
    table = _tool_table(root / "pyproject.toml") or {}
    env = os.environ

    uri = (
        tracking_uri
        or env.get("MLFLOW_TRACKING_URI")
        or table.get("tracking_uri")
        or f"sqlite:///{root / STATE_DIR / 'mlflow.db'}"
    )
    exp = experiment or env.get("NB2PROD_EXPERIMENT") or table.get("experiment") or "default"
    if strict is None:
        raw = env.get("NB2PROD_STRICT")
        strict = _parse_bool("NB2PROD_STRICT", raw) if raw is not None else bool(table.get("strict", False))
    rows_raw = env.get("NB2PROD_ROUNDTRIP_ROWS") or table.get("roundtrip_rows", 200)
    try:
        rows = int(rows_raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"roundtrip_rows={rows_raw!r} is not an integer", hint="use a whole number such as 200"
        ) from None
    if rows < 1:
        raise ConfigError(f"roundtrip_rows={rows} must be at least 1", hint="use a whole number such as 200")
    warm = _flag(env, table, "NB2PROD_WARM_ROUNDTRIP", "warm_roundtrip", True)
    champion = _flag(env, table, "NB2PROD_FIRST_CHAMPION", "first_champion", True)
    known = {"tracking_uri", "experiment", "strict", "roundtrip_rows", "warm_roundtrip", "first_champion"}
    extra = {k: v for k, v in table.items() if k not in known}
    return Settings(
        home=root,
        tracking_uri=str(uri),
        experiment=str(exp),
        strict=strict,
        roundtrip_rows=rows,
        warm_roundtrip=warm,
        first_champion=champion,
        extra=extra,
    )


def _flag(env: Any, table: dict[str, Any], var: str, key: str, default: bool) -> bool:
    """A boolean setting: ``var`` in the environment > ``key`` in ``[tool.nb2prod]`` > ``default``."""
    raw = env.get(var)
    if raw is not None:
        return _parse_bool(var, raw)
    value = table.get(key, default)
    if isinstance(value, bool):
        return value
    return _parse_bool(key, str(value))
