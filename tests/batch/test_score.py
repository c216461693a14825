"""``nb2prod score`` on the shared ``TUMOR`` capture: real files, the real registry and Bento store,
the real prediction store, a real Dask ``LocalCluster`` over TCP on 127.0.0.1."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import CapturedProject

pytestmark = pytest.mark.slow

CAPTURE = TUMOR


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A prediction store of this test alone (the served-model tests share the project's default)."""
    path = tmp_path / "predictions.db"
    monkeypatch.setenv("NB2PROD_PREDICTION_STORE", str(path))
    return path


def _frame(project: CapturedProject) -> pd.DataFrame:
    frame = pd.DataFrame(project.data["expected"]["rows"])
    frame["site"] = pd.Categorical(frame["site"], categories=["clinic-a", "clinic-b", "clinic-c"])
    return frame


def _manifest(project: CapturedProject) -> Any:
    from nb2prod.export.bento_store import manifest_path
    from nb2prod.serving.manifest import Manifest

    return Manifest.load(manifest_path(project.settings.bentoml_home, project.data["exported"].tag))


def _rows(store: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store) as conn:
        return conn.execute(sql).fetchall()


def _logged(store: Path, request_ids: list[str]) -> dict[str, Any]:
    """The batch rows of ``request_ids`` as the store gives them back (``batch/rows.py``)."""
    from nb2prod.batch import rows as batch_rows
    from nb2prod.serving.store import Store

    handle = Store(str(store), readonly=True)
    try:
        return batch_rows.lookup(handle, request_ids)
    finally:
        handle.close()


def test_scores_equal_the_registered_model_and_are_logged_as_batch(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    from nb2prod.batch import score

    exp = captured_project.data["expected"]
    src = tmp_path / "in.parquet"
    _frame(captured_project).to_parquet(src)
    result = score(TUMOR_MODEL, src, tmp_path / "out.parquet", chunk_rows=50)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    n = len(exp["rows"])
    assert (result.rows, result.scored, result.rejected) == (n, n, 0)
    assert out["prediction"].tolist() == exp["prediction"]
    classes = exp["classes"]
    proba = out[[f"proba_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(proba, np.array(exp["proba"]), rtol=1e-12, atol=1e-12)
    assert out["row_id"].tolist() == list(range(n))
    assert set(out["model_version"]) == {result.version} and result.version == "1"
    assert out["request_id"].tolist() == [f"{result.batch_id}-{i}" for i in range(n)]
    # every row in the prediction store as a batch row, read back in the service's shape
    assert _rows(store, "SELECT COUNT(*) FROM predictions") == [(0,)]
    assert _rows(store, "SELECT batch_id, SUM(n_rows), MIN(first_row), MAX(last_row) FROM batch_chunks") == [
        (result.batch_id, n, 0, n - 1)
    ]
    logged = _logged(store, out["request_id"].tolist())
    assert sorted(logged) == sorted(out["request_id"]) and {r.version for r in logged.values()} == {"1"}
    assert [logged[rid].answer["prediction"] for rid in out["request_id"]] == exp["prediction"]
    first = logged[f"{result.batch_id}-0"]
    logged_answer = first.answer
    # class probabilities as the service logs them (the label-free quality estimate reads them)
    assert set(logged_answer["probabilities"]) == {str(c) for c in classes}
    np.testing.assert_allclose(
        [logged_answer["probabilities"][str(c)] for c in classes], exp["proba"][0], rtol=1e-12, atol=1e-12
    )
    features = first.features
    assert features is not None and (
        features["site"] == exp["rows"][0]["site"]
        and features["mean radius"] == exp["rows"][0]["mean radius"]
    )
    # sketches under the batch's own writer, counting every row once
    sketched = _rows(store, "SELECT writer, col, SUM(n) FROM sketches GROUP BY writer, col")
    assert sketched and all(
        w.startswith(f"batch-{result.batch_id}") and total == n for w, _, total in sketched
    )
    assert {c for _, c, _ in sketched} >= {"site", "bmi", "__prediction__"}


def _bad_cells() -> list[tuple[str, str, Any, str]]:
    """(case, column, value in the file, the same value as a JSON literal a client would send)."""
    return [
        ("nan-in-float", "mean radius", math.nan, "NaN"),
        ("inf-in-float", "mean area", math.inf, "Infinity"),
        ("inf-in-nullable", "bmi", -math.inf, "-Infinity"),
        ("null-in-non-nullable", "mean texture", None, "null"),
        ("unseen-category", "site", "clinic-z", '"clinic-z"'),
        ("float-for-int", "visits", 2.5, "2.5"),
        ("null-bool", "screened", None, "null"),
    ]


def _service_reason(
    project: CapturedProject, row: dict[str, Any], column: str, literal: str
) -> tuple[str, str]:
    """What the service's own guard answers for ``row`` with ``column`` set to the JSON ``literal``."""
    from nb2prod.serving.guard import BadRequest, InputGuard
    from nb2prod.serving.schema import row_model

    manifest = _manifest(project)
    guard = InputGuard(None, row=row_model(manifest.schema, manifest.reference), kinds=manifest.kinds)  # type: ignore[arg-type]
    marker = "__RAW__"
    body = json.dumps(dict(row, **{column: marker})).replace(f'"{marker}"', literal).encode()
    with pytest.raises(BadRequest) as bad:
        guard._validate(body, "r1")
    assert bad.value.status == 422
    return bad.value.reason, bad.value.detail[0]["field"].removeprefix("row.")


def test_every_kind_of_bad_row_is_rejected_with_the_services_reason(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    from nb2prod.batch import score

    frame = _frame(captured_project).head(40).copy()
    frame["site"] = frame["site"].astype(str)
    frame["visits"] = frame["visits"].astype("float64")  # room for 2.5; whole floats are read as ints
    frame["screened"] = frame["screened"].astype(object)
    cases = _bad_cells()
    for i, (_, column, value, _) in enumerate(cases):
        frame.loc[i, column] = value
    frame.insert(0, "patient", [f"p{i}" for i in range(len(frame))])
    src = tmp_path / "bad.parquet"
    table = pa.Table.from_pandas(frame, preserve_index=False)  # pandas' NaN becomes null here...
    radius = table.schema.get_field_index("mean radius")
    # ...so the NaN case is written as a real NaN, as Arrow and Spark write them
    table = table.set_column(radius, "mean radius", pa.array(frame["mean radius"].tolist(), pa.float64()))
    pq.write_table(table, src)
    result = score(
        TUMOR_MODEL, src, tmp_path / "out.csv", rejects=tmp_path / "rejects.parquet", id_column="patient"
    )
    assert (result.scored, result.rejected) == (len(frame) - len(cases), len(cases))
    rejects = pq.read_table(tmp_path / "rejects.parquet").to_pandas().set_index("nb2prod_row")
    rows = captured_project.data["expected"]["rows"]
    for i, (case, column, value, literal) in enumerate(cases):
        want = _service_reason(captured_project, rows[i], column, literal)
        got = (rejects.loc[i, "nb2prod_reason"], rejects.loc[i, "nb2prod_field"])
        assert got == want, case
        # the original values travel with the reason
        assert rejects.loc[i, "patient"] == f"p{i}"
        original = rejects.loc[i, column]
        assert (
            (original is None or original != original)
            if value is None or value != value
            else original == value
        )
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["patient"].tolist() == [f"p{i}" for i in range(len(cases), len(frame))]
    # refused rows are counted in the store as the service counts them
    events = dict(_rows(store, "SELECT reason, COUNT(*) FROM events WHERE kind = 'invalid' GROUP BY reason"))
    assert sum(events.values()) == len(cases)


def test_csv_cells_are_parsed_by_kind_and_bad_text_is_a_type_reject(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    from nb2prod.batch import score

    exp = captured_project.data["expected"]
    frame = _frame(captured_project).head(30).copy()
    frame["mean radius"] = frame["mean radius"].astype(object)
    frame.loc[0, "mean radius"] = "twelve"
    frame["screened"] = frame["screened"].astype(object)
    frame.loc[1, "screened"] = "yes"
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    result = score(TUMOR_MODEL, src, tmp_path / "out.parquet", rejects=tmp_path / "rejects.csv", chunk_rows=7)
    assert (result.scored, result.rejected) == (28, 2)
    rejects = pd.read_csv(tmp_path / "rejects.csv")
    assert rejects[["nb2prod_row", "nb2prod_reason", "nb2prod_field"]].values.tolist() == [
        [0, "type", "mean radius"],
        [1, "type", "screened"],
    ]
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert out["prediction"].tolist() == exp["prediction"][2:30]
    np.testing.assert_allclose(out["proba_1"], np.array(exp["proba"])[2:30, 1], rtol=1e-9)


def test_columns_that_cannot_match_are_one_error_before_anything_is_written(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    frame = _frame(captured_project).drop(columns=["mean radius"])
    frame["zzz_extra"] = 1.0
    frame["visits"] = frame["visits"].astype(str)
    src = tmp_path / "in.parquet"
    frame.to_parquet(src)
    proc = captured_project.cli("score", TUMOR_MODEL, str(src), "-o", str(tmp_path / "out.parquet"))
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr
    assert "Traceback" not in message
    for expected in ("mean radius: missing_field", "zzz_extra: extra_field", "visits: type"):
        assert expected in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
    assert not store.exists()


def test_cli_scores_from_the_newest_bento_and_exits_1_on_rejects(
    captured_project: CapturedProject, tmp_path: Path
) -> None:
    frame = _frame(captured_project).head(20).copy()
    frame["site"] = frame["site"].astype(str)
    frame.loc[3, "site"] = "clinic-z"
    src = tmp_path / "in.parquet"
    frame.to_parquet(src)
    store = tmp_path / "store.db"
    argv = ["score", TUMOR_MODEL, str(src), "-o", str(tmp_path / "out.parquet"), "--bento"]
    proc = subprocess.run(
        [sys.executable, "-m", "nb2prod", *argv, "--rejects", str(tmp_path / "r.csv")],
        cwd=captured_project.home,
        env=captured_project.env(NB2PROD_PREDICTION_STORE=str(store)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert captured_project.data["exported"].tag in proc.stdout
    assert "refused 1 rows (unseen_category 1)" in proc.stdout
    assert len(pq.read_table(tmp_path / "out.parquet")) == 19
    assert pd.read_csv(tmp_path / "r.csv")["nb2prod_reason"].tolist() == ["unseen_category"]
    assert _rows(store, "SELECT SUM(n_rows) FROM batch_chunks") == [(19,)]
    # the refused row is no logged row; the others are, each under its own number
    scored = pq.read_table(tmp_path / "out.parquet").column("request_id").to_pylist()
    refused = int(pd.read_csv(tmp_path / "r.csv")["nb2prod_row"][0])
    batch = scored[0].rpartition("-")[0]
    assert sorted(_logged(store, [*scored, f"{batch}-{refused}"])) == sorted(scored)


def test_interrupted_run_leaves_no_output(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    from nb2prod.batch import score

    src = tmp_path / "in.parquet"
    frame = _frame(captured_project)
    frame.loc[[3, 15], "mean radius"] = math.nan  # a refused row in each of the first two chunks
    frame.to_parquet(src)

    chunks: list[int] = []

    def interrupt(scored: int, refused: int) -> None:
        chunks.append(scored)
        if len(chunks) == 3:  # three chunks scored and queued for the store, two refusals too
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score(TUMOR_MODEL, src, tmp_path / "out.parquet", chunk_rows=10, on_progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir() if p != store) == ["in.parquet"]
    # and no row of it stays in the store: nothing was delivered, nothing is traffic
    assert _rows(store, "SELECT COUNT(*) FROM batch_chunks") == [(0,)]
    assert _rows(store, "SELECT COUNT(*) FROM sketches") == [(0,)]
    # nor do its refusals count: a retry refuses the same rows again
    assert _rows(store, "SELECT COUNT(*) FROM events") == [(0,)]
    # the retry delivers, and its refusals count once
    score(TUMOR_MODEL, src, tmp_path / "out.parquet", chunk_rows=10)
    assert _rows(store, "SELECT kind, COUNT(*) FROM events GROUP BY kind") == [("invalid", 2)]


def test_monitor_reports_drift_for_a_shifted_batch(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    from nb2prod.batch import score
    from nb2prod.lifecycle.served import monitor

    frame = pd.concat([_frame(captured_project)] * 2, ignore_index=True)
    frame["mean radius"] = frame["mean radius"] * 2.5
    frame.to_parquet(tmp_path / "shifted.parquet")
    score(TUMOR_MODEL, tmp_path / "shifted.parquet", tmp_path / "out.parquet")
    report = monitor(TUMOR_MODEL, settings=captured_project.settings)
    assert report.status == "drift", report
    assert "mean radius" in report.drifted


def test_parts_on_a_dask_local_cluster_carry_the_model_once_per_worker(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    from distributed import LocalCluster

    from nb2prod.batch import score

    exp = captured_project.data["expected"]
    frame = _frame(captured_project)
    parts = tmp_path / "parts"
    parts.mkdir()
    bounds = [0, 40, 90, len(frame)]
    for i in range(3):
        pq.write_table(
            pa.Table.from_pandas(frame.iloc[bounds[i] : bounds[i + 1]], preserve_index=False),
            parts / f"p{i}.parquet",
        )
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        result = score(TUMOR_MODEL, parts, tmp_path / "out", scheduler=cluster.scheduler_address)
    assert (result.parts, result.scored, result.model_copies) == (3, len(frame), 1)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    out = pq.read_table(tmp_path / "out").to_pandas().sort_values("row_id")
    assert out["prediction"].tolist() == exp["prediction"]
    assert out["row_id"].tolist() == list(range(len(frame)))
    assert _rows(store, "SELECT SUM(n_rows), COUNT(*) FROM batch_chunks") == [(len(frame), 3)]
    assert sorted(_logged(store, out["request_id"].tolist())) == sorted(out["request_id"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_feedback_joins_batch_rows_into_live_quality_and_the_estimate(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    """Labels for a batch's request ids (from ``nb2prod feedback``'s file import) match logged
    rows, and ``nb2prod monitor`` computes live quality from them and the label-free estimate
    from the logged probabilities, as for the service's rows."""
    from nb2prod.batch import score
    from nb2prod.lifecycle.feedback import import_feedback
    from nb2prod.lifecycle.served import monitor

    exp = captured_project.data["expected"]
    src = tmp_path / "in.parquet"
    _frame(captured_project).to_parquet(src)
    result = score(TUMOR_MODEL, src, tmp_path / "out.parquet", chunk_rows=16)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    classes = exp["classes"]
    # the first 10 rows labelled with another class than predicted, the rest as predicted
    labels = [next(c for c in classes if c != p) if i < 10 else p for i, p in enumerate(out["prediction"])]
    pd.DataFrame({"request_id": out["request_id"], "label": labels}).to_csv(tmp_path / "fb.csv", index=False)
    done = import_feedback(TUMOR_MODEL, tmp_path / "fb.csv", settings=captured_project.settings)
    assert (done.stored, done.matched) == (result.scored, result.scored)
    report = monitor(TUMOR_MODEL, settings=captured_project.settings)
    n = result.scored
    assert report.traffic["batch"] == {result.version: n}
    assert report.quality["labelled"] == n
    assert report.quality["accuracy"] == pytest.approx((n - 10) / n)
    assert report.estimate and report.estimate["estimated"] == n


def test_a_failed_part_on_the_cluster_leaves_no_output_and_no_logged_row(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    """A part that cannot be read on its worker fails the batch while another part is still
    scoring on the other worker: that part stops at its next chunk, and once both have stopped
    every row the batch logged is removed (it delivered none): no output, no chunk, no sketch."""
    from distributed import LocalCluster

    from nb2prod.batch import score

    frame = _frame(captured_project)
    frame.loc[0, "mean radius"] = math.nan  # part 0 refuses a row
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, (a, b) in enumerate([(0, 90), (90, len(frame))]):
        pq.write_table(pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False), parts / f"p{i}.parquet")

    def lose_a_part(model: Any, source: Any) -> None:
        (parts / "p1.parquet").unlink()  # read at the start, gone when its task runs

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        with pytest.raises(Exception, match=r"p1\.parquet"):
            # one row a chunk: part 0 is still logging chunk after chunk when part 1 fails
            score(
                TUMOR_MODEL,
                parts,
                tmp_path / "out",
                scheduler=cluster.scheduler_address,
                chunk_rows=1,
                on_start=lose_a_part,
            )
        # when score() returns, part 0 has stopped and everything is gone (not later)
        assert _rows(store, "SELECT COUNT(*) FROM batch_chunks") == [(0,)]
        time.sleep(2)  # the workers live on: a part left running would log more rows by now
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert _rows(store, "SELECT COUNT(*) FROM batch_chunks") == [(0,)]
    assert _rows(store, "SELECT COUNT(*) FROM sketches") == [(0,)]
    assert _rows(store, "SELECT COUNT(*) FROM events") == [(0,)]


def test_a_model_without_a_champion_is_one_error_naming_the_version_to_give(
    captured_project: CapturedProject, tmp_path: Path, store: Path
) -> None:
    import mlflow

    from nb2prod.batch import ScoreError, score

    src = tmp_path / "in.parquet"
    _frame(captured_project).head(10).to_parquet(src)
    out = tmp_path / "out.parquet"
    client = mlflow.MlflowClient(captured_project.tracking_uri, captured_project.tracking_uri)
    client.delete_registered_model_alias(TUMOR_MODEL, "champion")
    try:
        with pytest.raises(ScoreError) as refused:
            score(TUMOR_MODEL, src, out)
        assert refused.value.message.startswith(f"{TUMOR_MODEL} has no champion")
        assert f"nb2prod score {TUMOR_MODEL}/1" in (refused.value.hint or "")
        assert not out.exists() and not store.exists()  # refused before anything was written
        result = score(f"{TUMOR_MODEL}/1", src, out)  # naming the version scores
        assert (result.version, result.source) == ("1", f"models:/{TUMOR_MODEL}/1")
    finally:
        client.set_registered_model_alias(TUMOR_MODEL, "champion", "1")
    assert score(TUMOR_MODEL, src, out).source == f"models:/{TUMOR_MODEL}@champion"
