"""Options of ``nb2prod score`` refused before anything is loaded or written (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nb2prod.batch import ScoreError, score
from nb2prod.config import Settings


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    path = tmp_path / "in.parquet"
    pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(path)
    return path


@pytest.mark.parametrize("store", [None, "preds.db", "sqlite:////srv/preds.db"])
def test_a_local_sqlite_store_with_a_remote_scheduler_is_refused_naming_the_fix(
    store: str | None, parquet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NB2PROD_PREDICTION_STORE", raising=False)
    settings = Settings(home=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ScoreError) as err:
        score(
            "churn",
            parquet,
            tmp_path / "out",
            scheduler="tcp://10.20.30.40:8786",
            store=store,
            settings=settings,
        )
    message = str(err.value)
    assert "tcp://10.20.30.40:8786" in message and "cannot write to it" in message
    assert "--store postgresql+psycopg://" in message and "without --scheduler" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]  # nothing loaded, nothing written


@pytest.mark.parametrize(
    ("store", "scheduler"),
    [
        (None, "tcp://127.0.0.1:8786"),
        ("preds.db", "tcp://localhost:8786"),
        ("preds.db", "tcp://[::1]:8786"),
        ("postgresql+psycopg://u:p@db.example:5432/preds", "tcp://10.20.30.40:8786"),
        (None, "inproc://10.20.30.40/1/1"),
    ],
)
def test_a_store_every_worker_reaches_is_accepted(store: str | None, scheduler: str) -> None:
    from nb2prod.batch.score import check_store_reachable

    check_store_reachable(store or "", scheduler)


def test_the_result_renders_its_summary(tmp_path: Path) -> None:
    from nb2prod.batch.score import ScoreResult

    result = ScoreResult(
        batch_id="b1",
        model="churn",
        version="3",
        source="models:/churn/3",
        output=tmp_path / "out.parquet",
        rejects=None,
        rows=10,
        scored=8,
        rejected=2,
        reasons={"type": 2},
        store="postgresql+psycopg://u:***@db/p",
        seconds=2.0,
    )
    text = str(result)
    assert text.splitlines()[0].startswith("scored 8 of 10 rows with churn version 3 (models:/churn/3)")
    assert "refused 2 rows (type 2) (name a file with --rejects to keep them)" in text
    assert "logged as batch b1 (request ids b1-ROW) to postgresql+psycopg://u:***@db/p" in text
