"""Retrain's metrics and the loop's errors, without a kernel or a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_f1_macro_is_the_metric_name_and_f1_a_deprecated_alias(breast_cancer: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    from nb2prod import metrics
    from nb2prod.exceptions import LifecycleError
    from nb2prod.lifecycle import score
    from nb2prod.lifecycle.retrain import metric_name

    assert metric_name("f1_macro") == metrics.F1_MACRO
    with pytest.warns(FutureWarning, match="use 'f1_macro'"):
        assert metric_name("f1") == metrics.F1_MACRO
    with pytest.raises(LifecycleError, match="unknown metric 'macro_f1'") as err:
        metric_name("macro_f1")
    assert err.value.hint is not None and "f1_macro" in err.value.hint

    frame = breast_cancer.head(200)
    model = LogisticRegression(max_iter=5000).fit(frame.drop(columns="target"), frame.target)
    info = {"feature_names": [c for c in frame.columns if c != "target"]}
    canonical = score(model, info, frame, "target", "f1_macro")
    with pytest.warns(FutureWarning):
        assert score(model, info, frame, "target", "f1") == canonical
    scores = {name: score(model, info, frame, "target", name) for name in metrics.HIGHER_IS_BETTER}
    assert 0.5 < scores[metrics.ACCURACY] <= 1.0 and 0.5 < scores[metrics.ROC_AUC] <= 1.0
    assert scores[metrics.F1_MACRO] == canonical and 0 <= scores[metrics.LOG_LOSS] < 0.5
    assert scores[metrics.MAE] == pytest.approx(1 - scores[metrics.ACCURACY])  # 0/1 labels: the error rate


def test_a_model_without_a_bento_is_an_export_error_not_a_wrapped_one(project: Path) -> None:
    from nb2prod import lifecycle
    from nb2prod.exceptions import ExportError

    with pytest.raises(ExportError, match="no Bento of 'm'") as err:
        lifecycle.monitor("m")
    assert type(err.value) is ExportError and err.value.hint == "export it first: nb2prod export m"


def test_bad_feedback_files_are_refused_before_anything_is_stored(project: Path) -> None:
    from nb2prod.exceptions import LifecycleError
    from nb2prod.lifecycle import import_feedback
    from nb2prod.lifecycle.feedback import coerce_label

    with pytest.raises(LifecycleError, match="no file at"):
        import_feedback("m", project / "missing.csv")
    assert coerce_label(" 1 ", ["0", "1"], True) == 1
    assert coerce_label(1.0, ["0", "1"], True) == 1
    assert coerce_label("2.5", None, False) == 2.5
    with pytest.raises(LifecycleError, match="not a class"):
        coerce_label("7", ["0", "1"], True)
    with pytest.raises(LifecycleError, match="not a number"):
        coerce_label("big", None, False)


def test_if_degraded_refuses_a_negative_drop_and_needs_a_bento_before_any_notebook_runs(
    project: Path,
) -> None:
    from nb2prod import lifecycle
    from nb2prod.exceptions import ExportError, LifecycleError

    notebook = project / "never-run.ipynb"  # does not exist: nothing may get as far as running it
    with pytest.raises(LifecycleError, match=r"--min-estimated-drop -0\.1 is negative"):
        lifecycle.retrain("m", notebook, if_degraded=True, min_estimated_drop=-0.1)
    with pytest.raises(ExportError, match="no Bento of 'm'"):
        lifecycle.retrain("m", notebook, if_degraded=True)
