"""The shadow decision: seeded better / equal / worse challengers on shadow rows written to a real store.

Rows are written as the service writes them: the answered row (the champion's, ``monitor`` =
the service's monitor), the challenger's shadow row with the same request id (``monitor`` =
``shadow``), and the feedback label. The decision code needs no server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nb2prod.capture.data import describe
from nb2prod.lifecycle.shadow import decision_of
from nb2prod.monitoring.shadow import compare, summarize_shadow
from nb2prod.monitoring.window import read_shadow
from nb2prod.serving.store import SQL_INSERT_PREDICTION, Store

N = 400
T0 = 1_700_000_000.0  # in the past: decide_shadow reads up to now


def _write(
    path: Path,
    champion: np.ndarray,
    challenger: np.ndarray,
    labels: np.ndarray,
    label_every: int = 1,
    shadow_version: str = "2",
    prefix: str = "r",
) -> str:
    """Answered rows (version 1), shadow rows (version 2) and feedback into a new store at ``path``."""

    def row(i: int, monitor: str, version: str, pred: Any) -> dict[str, Any]:
        return {
            "request_id": f"{prefix}{i}",
            "ts": T0 + i,
            "monitor": monitor,
            "model_version": version,
            "features": json.dumps({"x": float(i)}),
            "prediction": json.dumps({"prediction": pred}),
        }

    store = Store(str(path))
    store.write(
        SQL_INSERT_PREDICTION,
        [row(i, "nb2prod_m", "1", champion[i].item()) for i in range(len(labels))]
        + [row(i, "shadow", shadow_version, challenger[i].item()) for i in range(len(labels))],
    )
    store.add_feedback(
        [(f"{prefix}{i}", labels[i].item()) for i in range(0, len(labels), label_every)], source="t"
    )
    store.close()
    return str(path)


def _seeded(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels; a champion right 80 % of the time; a challenger better (90 %), equal (80 %, other rows) or worse (70 %)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, N)
    champ_right = rng.random(N) < 0.8
    if kind == "better":
        chall_right = champ_right | (rng.random(N) < 0.5)  # fixes half of the champion's errors
    elif kind == "equal":
        chall_right = rng.permutation(champ_right)  # as often right, on other rows
    else:
        chall_right = champ_right & (rng.random(N) < 0.875)
    champion = np.where(champ_right, labels, 1 - labels)
    challenger = np.where(chall_right, labels, 1 - labels)
    return champion, challenger, labels


@pytest.mark.parametrize(("kind", "promote"), [("better", True), ("equal", False), ("worse", False)])
def test_shadow_decision_is_right_for_seeded_challengers(tmp_path: Path, kind: str, promote: bool) -> None:
    champion, challenger, labels = _seeded(kind)
    rows = read_shadow(_write(tmp_path / "p.db", champion, challenger, labels), None, T0 + 10 * N)
    assert len(rows) == N and all(r.answered_version == "1" for r in rows)
    decision = decision_of(rows, "2", classifier=True, min_improvement=0.02)
    cmp = decision.comparison
    assert decision.promote is promote, decision.reason
    assert cmp.test == "mcnemar_exact" and cmp.rows == N
    assert cmp.champion == pytest.approx(float((champion == labels).mean()))
    assert cmp.challenger == pytest.approx(float((challenger == labels).mean()))
    assert cmp.only_challenger == int(((challenger == labels) & (champion != labels)).sum())
    if promote:
        assert cmp.p_value < 0.05 and "mcnemar_exact p =" in decision.reason
    # a margin larger than the gain refuses even the better one
    assert not decision_of(rows, "2", classifier=True, min_improvement=0.5).promote


def test_decision_needs_labelled_rows_and_the_right_metric(tmp_path: Path) -> None:
    from nb2prod.exceptions import LifecycleError

    champion, challenger, labels = _seeded("better")
    rows = read_shadow(
        _write(tmp_path / "p.db", champion, challenger, labels, label_every=40), None, T0 + 10 * N
    )
    few = decision_of(rows, "2", classifier=True)
    assert not few.promote and "only 10 labelled shadow rows" in few.reason
    assert not decision_of(rows, "3", classifier=True).promote  # no shadow rows of version 3
    with pytest.raises(LifecycleError, match="does not apply"):
        decision_of(rows, "2", classifier=True, metric="mae")
    f1 = compare(rows, True, "f1_macro", version="2")
    assert f1.test == "paired_bootstrap" and f1.rows == 10


def test_regression_shadow_uses_the_paired_bootstrap(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    labels = rng.normal(10, 2, N)
    champion = labels + rng.normal(0, 1.0, N)
    better = labels + rng.normal(0, 0.5, N)
    rows = read_shadow(_write(tmp_path / "p.db", champion, better, labels), None, T0 + 10 * N)
    decision = decision_of(rows, "2", classifier=False, min_improvement=0.1)
    assert decision.promote and decision.comparison.test == "paired_bootstrap"
    assert decision.comparison.metric == "mae" and decision.comparison.improvement is not None
    assert decision.comparison.improvement == pytest.approx(
        float(np.mean(np.abs(champion - labels)) - np.mean(np.abs(better - labels)))
    )
    worse = read_shadow(
        _write(tmp_path / "q.db", champion, labels + rng.normal(0, 2.0, N), labels), None, T0 + 10 * N
    )
    assert not decision_of(worse, "2", classifier=False).promote


def test_summary_shows_agreement_drift_and_both_qualities_on_the_same_rows(tmp_path: Path) -> None:
    champion, challenger, labels = _seeded("better")
    rows = read_shadow(
        _write(tmp_path / "p.db", champion, challenger, labels, label_every=2), None, T0 + 10 * N
    )
    profile = describe(pd.DataFrame({"y": labels}), name="train").to_dict()["profile"]["y"]
    summary = summarize_shadow(rows, True, profile)
    assert summary["rows"] == N and summary["paired"] == N and summary["versions"] == {"2": N}
    assert summary["agreement"] == pytest.approx(float((champion == challenger).mean()))
    assert summary["labelled"] == N // 2
    assert summary["champion"]["accuracy"] == pytest.approx(float((champion == labels)[::2].mean()))
    assert summary["challenger"]["accuracy"] == pytest.approx(float((challenger == labels)[::2].mean()))
    drift = summary["prediction_drift"]
    assert drift is not None and drift["n"] == N and not drift["drifted"]


def test_promote_if_shadow_better_records_the_decision_in_the_history(project: Path, client: Any) -> None:
    """On a real MLflow registry and the model's real store (no Bento: the task is named)."""
    from nb2prod.config import load_settings
    from nb2prod.lifecycle import promote
    from nb2prod.lifecycle.served import store_location
    from nb2prod.lifecycle.shadow import decide_shadow, start_shadow
    from nb2prod.tracking import registry

    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", "file:///nowhere")
    promote("m", "1", wait=0)
    started = start_shadow("m", "2")
    assert started.version == "2" and started.event is not None and started.event.reason == "shadow"
    location = store_location(load_settings(), "m")
    assert Store(location).control()["shadow"][0] == {"version": "2"}
    champion, challenger, labels = _seeded("worse")
    _write(Path(location.removeprefix("sqlite:///")), champion, challenger, labels)
    refused = decide_shadow("m", "2", classifier=True, since="2000-01-01", wait=0)
    assert not refused.promote and refused.event is not None and refused.comparison.rows == N
    assert (
        refused.event.reason.startswith("shadow refused") and refused.event.details["decision"] == "refused"
    )
    assert registry.alias_version(client, "m", "champion") == "1"
    start_shadow("m", "3")
    champion, challenger, labels = _seeded("better")
    _write(
        Path(location.removeprefix("sqlite:///")),
        champion,
        challenger,
        labels,
        shadow_version="3",
        prefix="s",
    )
    promoted = decide_shadow("m", "3", classifier=True, min_improvement=0.02, wait=0)
    assert promoted.promote and promoted.switch is not None and promoted.switch.active == "3"
    assert promoted.event is not None and promoted.event.reason.startswith("shadow better: accuracy")
    assert promoted.event.details["test"] == "mcnemar_exact" and promoted.event.details["p_value"] < 0.05
    assert registry.alias_version(client, "m", "champion") == "3"
    stopped = start_shadow("m", None)
    assert stopped.version is None and Store(location).control()["shadow"][0] is None
