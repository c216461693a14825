"""``%nb2prod`` in a real in-process IPython shell: every subcommand, right and wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nb2prod import exceptions as exc
from nb2prod import session


def magic(ip: Any, line: str) -> Any:
    return ip.run_line_magic("nb2prod", line)


@pytest.fixture
def started(ip: Any, breast_cancer: Any) -> Any:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(breast_cancer, test_size=0.25, random_state=0)
    ip.user_ns.update(train=train, test=test, X=train.drop(columns="target"), y=train.target)
    magic(ip, "start unit")
    return ip


def test_load_ext_registers_magic_and_hook(ip: Any) -> None:
    assert "nb2prod" in ip.magics_manager.magics["line"]
    import nb2prod

    assert nb2prod._magics.post_run_cell in ip.events.callbacks["post_run_cell"]


def test_magic_before_start_says_how_to_start(ip: Any, breast_cancer: Any) -> None:
    ip.user_ns["df"] = breast_cancer
    with pytest.raises(exc.NotStartedError, match="no capture session") as info:
        magic(ip, "data df")
    assert "%nb2prod start" in str(info.value)


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("", exc.UsageError, "usage: %nb2prod"),
        ("strat", exc.UsageError, "did you mean 'start'"),
        ("data", exc.UsageError, "the following arguments are required: DF"),
        ("data --role nope x", exc.UsageError, "invalid choice: 'nope'"),
        ("start 'unclosed", exc.UsageError, "cannot parse"),
    ],
)
def test_argument_errors(ip: Any, line: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        magic(ip, line)


def test_unknown_variable_suggests_nearest(started: Any) -> None:
    with pytest.raises(exc.VariableNotFoundError, match="no variable named 'trian'") as info:
        magic(started, "data trian")
    assert "did you mean 'train'" in str(info.value)


def test_data_of_wrong_type_is_a_data_error(started: Any) -> None:
    started.user_ns["n"] = 42
    with pytest.raises(exc.DataError) as info:
        magic(started, "data n")
    assert "int" in str(info.value)


def test_data_with_missing_target_column(started: Any) -> None:
    with pytest.raises(exc.DataError, match="label"):
        magic(started, "data train --target label")


def test_data_records_digest_schema_profile_in_mlflow(started: Any, client: Any, capsys: Any) -> None:
    from nb2prod.capture.hashing import digest_frame

    magic(started, "data train --role train --target target")
    out = capsys.readouterr().out
    record = session.status().datasets[0]
    assert record.digest == digest_frame(started.user_ns["train"])
    assert record.digest.startswith("xxh3_128:") and record.digest in out
    run = client.get_run(session.current().run_id)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "train"
    assert inp.dataset.digest == record.digest.split(":")[1][:32]
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "train"
    assert run.data.tags["nb2prod.data.train.digest"] == record.digest
    colspec = json.loads(inp.dataset.schema)["mlflow_colspec"]
    assert len(colspec) == 31 and colspec[0]["type"] == "double"
    stored = json.loads(Path(client.download_artifacts(run.info.run_id, "datasets/train.json")).read_text())
    assert stored["digest"] == record.digest
    assert stored["target"] == "target"
    assert "mean radius" in stored["profile"]


def test_data_from_a_file_path(started: Any, project: Path) -> None:
    csv = project / "rows.csv"
    started.user_ns["train"].head(50).to_csv(csv, index=False)
    magic(started, f"data {csv} --role reference")
    record = session.status().datasets[-1]
    assert record.name == "rows" and record.role == "reference" and record.n_rows == 50


def test_model_unfitted_is_refused(started: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    started.user_ns["clf"] = LogisticRegression()
    with pytest.raises(exc.ModelError, match="not fitted") as info:
        magic(started, "model clf --X X --y y")
    assert "clf.fit(X, y)" in str(info.value)


def test_model_that_is_not_a_model(started: Any) -> None:
    started.user_ns["thing"] = {"a": 1}
    with pytest.raises(exc.ModelError, match="no predict method"):
        magic(started, "model thing --X X")


def test_model_without_training_data(started: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = started.user_ns["X"], started.user_ns["y"]
    started.user_ns["clf"] = LogisticRegression(max_iter=5000).fit(X, y)
    with pytest.raises(exc.ModelError, match="no training data") as info:
        magic(started, "model clf")
    assert "--role train" in str(info.value)
    with pytest.raises(exc.ModelError, match="--y was given without --X"):
        magic(started, "model clf --y y")


def test_model_fitted_on_other_columns(started: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = started.user_ns["X"], started.user_ns["y"]
    started.user_ns["clf"] = LogisticRegression(max_iter=5000).fit(X.iloc[:, :5], y)
    with pytest.raises(exc.ModelError, match="fitted on other columns"):
        magic(started, "model clf --X X --y y")


def test_bad_model_name(started: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = started.user_ns["X"], started.user_ns["y"]
    started.user_ns["clf"] = LogisticRegression(max_iter=5000).fit(X, y)
    with pytest.raises(exc.ModelError, match="not allowed"):
        magic(started, "model clf --X X --y y --name 'bad name!'")


def test_rebinding_a_tracked_variable_warns_once(started: Any, capsys: Any) -> None:
    magic(started, "data train --target target")
    started.run_cell("train = train.copy()")
    started.run_cell("x = 1")
    err = capsys.readouterr().err
    assert err.count("'train' now holds another object") == 1


@pytest.mark.slow
def test_model_is_logged_roundtripped_and_registered(started: Any, client: Any, capsys: Any) -> None:
    from sklearn.ensemble import RandomForestClassifier

    magic(started, "data train --role train --target target")
    magic(started, "data test --role test --target target")
    started.run_cell(
        "from sklearn.ensemble import RandomForestClassifier\n"
        "forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)"
    )
    assert isinstance(started.user_ns["forest"], RandomForestClassifier)
    magic(started, "model forest --name bc-forest")
    out = capsys.readouterr().out
    assert "registered models:/bc-forest/1" in out
    assert "logging model 'bc-forest' to MLflow" in out and "in a fresh Python process" in out
    assert (
        out.index("fresh Python process") < out.index("registering model") < out.index("registered models:/")
    )
    record = session.status().models[0]
    assert record.roundtrip.ok and record.roundtrip.rows == 200
    assert record.roundtrip.warm  # checked by the process started at %nb2prod start
    assert "sklearn.tree._tree.Tree" in record.info.trusted_types
    assert record.info.params["n_estimators"] == "20"
    assert client.get_logged_model(record.model_id).params["n_estimators"] == "20"
    assert record.metrics["training_accuracy"] > 0.95 and 0.8 < record.metrics["test_accuracy"] <= 1.0

    mv = client.get_model_version("bc-forest", "1")
    assert mv.tags["nb2prod.run_id"] == session.current().run_id
    assert mv.tags["nb2prod.data.X.digest"] == record.data_digests["X"]
    assert mv.tags["nb2prod.data.dataset.train.digest"] == session.status().datasets[0].digest
    assert mv.tags["nb2prod.env_digest"] == session.current().environment.digest
    # the hashes of every file are a run artifact; the version carries one digest of them
    hashes = json.loads(
        Path(client.download_artifacts(record.run_id, f"integrity/{record.model_id}.json")).read_text()
    )
    assert "model.skops" in hashes and "MLmodel" in hashes and hashes == record.artifact_sha256
    assert (
        mv.tags["nb2prod.artifact_sha256"].startswith("sha256:")
        and len(mv.tags["nb2prod.artifact_sha256"]) == 71
    )

    import mlflow

    info = mlflow.models.get_model_info("models:/bc-forest/1")
    assert [c.name for c in info.signature.inputs.inputs][:2] == ["mean radius", "mean texture"]
    assert info.saved_input_example_info is not None
    metric_keys = set(client.get_run(record.run_id).data.metrics)
    assert {"training_accuracy", "test_accuracy", "training_roc_auc"} <= metric_keys
    reqs = record.requirements
    assert any(r.startswith("scikit-learn==") for r in reqs) and any(r.startswith("skops==") for r in reqs)


@pytest.mark.slow
def test_untrusted_type_needs_explicit_trust(
    started: Any, client: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "nb2prod_testmods.py").write_text(
        "from sklearn.base import BaseEstimator, TransformerMixin\n"
        "class Passthrough(TransformerMixin, BaseEstimator):\n"
        "    def fit(self, X, y=None):\n        self.fitted_ = True\n        return self\n"
        "    def transform(self, X):\n        return X\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    started.run_cell(
        "from nb2prod_testmods import Passthrough\n"
        "from sklearn.pipeline import make_pipeline\nfrom sklearn.linear_model import LogisticRegression\n"
        "pipe = make_pipeline(Passthrough(), LogisticRegression(max_iter=5000)).fit(X, y)"
    )
    with pytest.raises(exc.ModelError, match=r"does not trust by default: nb2prod_testmods\.Passthrough"):
        magic(started, "model pipe --X X --y y")
    # Trusted, it is saved; but a fresh process (no access to this folder) cannot import it.
    with pytest.raises(exc.RoundTripError, match="does not load in a fresh Python process") as info:
        magic(started, "model pipe --X X --y y --trust nb2prod_testmods.Passthrough")
    assert "No module named 'nb2prod_testmods'" in str(info.value)
    assert client.search_registered_models() == []


@pytest.mark.slow
def test_generic_model_goes_through_pyfunc(started: Any, tmp_path: Path, monkeypatch: Any) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "nb2prod_threshold.py").write_text(
        "import numpy as np\n"
        "class Threshold:\n"
        "    def __init__(self, column, cut):\n        self.column, self.cut = column, cut\n"
        "    def predict(self, X):\n        return (np.asarray(X[self.column]) > self.cut).astype('int64')\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))  # the fresh round-trip process imports it too
    started.run_cell("from nb2prod_threshold import Threshold\nrule = Threshold('mean radius', 15.0)")
    record = session.model(started.user_ns["rule"], X=started.user_ns["X"], name="rule", variable="rule")
    assert record.info.flavor == "pyfunc" and record.version == "1"
    assert record.roundtrip.ok and record.metrics == {}
    # PYTHONPATH changed after start: the warm process does not have it, a new one is started
    assert not record.roundtrip.warm
    assert any(r.startswith("numpy==") for r in record.requirements)


def test_active_session_is_the_one_start_opened(ip: Any) -> None:
    assert session.active() is None
    magic(ip, "start unit")
    opened = session.active()
    assert opened is not None and opened is session.current()
    assert session._current is opened  # the name tests/conftest.py reads, kept while it does
    magic(ip, "end")
    assert session.active() is None


def test_usage_errors_are_nb2prods_not_ipythons(ip: Any) -> None:
    from IPython.core.error import UsageError as IPythonUsageError

    with pytest.raises(exc.UsageError) as info:
        magic(ip, "strat")
    assert not isinstance(info.value, IPythonUsageError)
    assert info.value._render_traceback_()[0].startswith("nb2prod: unknown subcommand")


@pytest.mark.slow
def test_fresh_process_refuses_files_that_differ_from_their_hashes(started: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    from nb2prod.capture.models import roundtrip_check, to_signature_types

    X, y = started.user_ns["X"], started.user_ns["y"]
    clf = LogisticRegression(max_iter=5000).fit(X, y)
    record = session.model(clf, X=X, y=y, name="bc-logit", variable="clf")
    assert record.roundtrip.ok and "MLmodel" in record.artifact_sha256
    sample = to_signature_types(X.head(20))
    tampered = dict(record.artifact_sha256, MLmodel="sha256:" + "0" * 64)
    with pytest.raises(exc.RoundTripError, match="differs from what was written") as info:
        roundtrip_check(
            f"models:/{record.model_id}",
            session.current().settings.tracking_uri,
            sample,
            clf.predict(sample),
            None,
            variable="clf",
            artifact_sha256=tampered,
        )
    assert "MLmodel" in str(info.value)


def test_the_warm_round_trip_process_waits_apart_and_ends_with_the_session(ip: Any) -> None:
    import os

    from nb2prod.capture.models import WARM

    magic(ip, "start unit")
    assert WARM.waiting()
    worker = WARM._worker
    assert worker is not None and worker.proc.pid != os.getpid()
    assert os.getpgid(worker.proc.pid) != os.getpgrp()  # a kernel's shutdown does not wait on it
    magic(ip, "end")
    assert not WARM.waiting() and worker.proc.poll() is not None
