"""nb2prod reproduce: re-run a stored notebook and give a verdict with its reasons (real kernels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nb2prod.exceptions import UsageError
from nb2prod.execute import reproduce, run_notebook
from tests.execute.runs import cli


@pytest.mark.slow
def test_reproduce_gives_a_verdict_and_reasons(nbs: Path, client: Any) -> None:
    nb = nbs / "params.ipynb"
    same = run_notebook(nb, {"x": "1.5"}, progress=False)
    # The snapshot is what is re-run, not the file on disk: change the file afterwards.
    nb.write_text(nb.read_text().replace("x * n", "x * n * 100"))
    verdict = reproduce(same.run_id, progress=False)
    assert verdict.reproduced, [f for f in verdict.findings if not f.ok]
    assert verdict.run.parameters == {"x": 1.5}
    tags = client.get_run(verdict.run.run_id).data.tags
    assert tags["nb2prod.reproduces"] == same.run_id and tags["nb2prod.reproduced"] == "true"
    assert {f.check for f in verdict.findings} >= {"environment", "notebook", "metric"}

    noisy = run_notebook(nb, {"noise": "1"}, progress=False)
    proc = cli("reproduce", noisy.run_id, "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "NOT REPRODUCED" in proc.stdout
    assert "DIFF metric      test_score" in proc.stdout and "> rtol" in proc.stdout
    # A loose tolerance accepts it (noise < 1 on 300.0 is within 1 %).
    assert cli("reproduce", noisy.run_id, "--rtol", "0.01", "--no-progress").returncode == 0


def test_reproduce_unknown_run_is_a_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="no run"):
        reproduce("0" * 32, progress=False)


def _write_data(path: Path, shift: float) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    label = (a + b > 0).astype(int)
    pd.DataFrame({"a": a + shift * label, "b": b, "label": label}).to_csv(path, index=False)


@pytest.mark.slow
def test_reproduce_names_changed_data_metrics_and_predictions(nbs: Path, client: Any) -> None:
    nb = nbs / "tiny_model.ipynb"
    _write_data(nbs / "data.csv", 0.0)
    first = run_notebook(nb, progress=False)
    assert first.ok, first.error
    assert first.registered == {"tiny": "1"}
    assert set(first.data_digests) >= {"train", "test"}
    assert "test_accuracy" in first.metrics
    # Same data: reproduced, and both models re-predicted the whole test frame, not only the example.
    same = reproduce(first.run_id, progress=False)
    assert same.reproduced, same.reasons
    on_test = next(f for f in same.findings if (f.check, f.name) == ("prediction", "tiny on test"))
    assert on_test.ok
    assert (
        on_test.detail
        == "same predictions on all 20 rows of test data 'test', the original's data (same digest)"
    )
    # Same file name, different content: the data digests must tell.
    _write_data(nbs / "data.csv", 3.0)
    verdict = reproduce(first.run_id, progress=False)
    assert not verdict.reproduced
    reasons = {(f.check, f.name) for f in verdict.reasons}
    assert {
        ("data", "train"),
        ("data", "test"),
        ("prediction", "tiny"),
        ("prediction", "tiny on test"),
    } <= reasons
    on_test = next(f for f in verdict.reasons if f.name == "tiny on test")
    assert "of 20 rows differ" in on_test.detail and "test data 'test'" in on_test.detail
    # both models predicted the rows the original run stored (recorded at capture), not the new data
    assert "the original's data (same digest)" in on_test.detail
    assert any(check == "metric" for check, _ in reasons)
    assert ("environment", "other packages") not in reasons and ("notebook", "code digest") not in reasons
    train = next(f for f in verdict.reasons if f.name == "train")
    assert train.original == first.data_digests["train"] and train.detail == "content differs"
    # A reproduction checks; it registers nothing.
    assert verdict.run.registered == {}
    assert [str(v.version) for v in client.search_model_versions("name = 'tiny'")] == ["1"]
