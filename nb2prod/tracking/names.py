"""The contract vocabulary: every MLflow tag name and artifact path nb2prod writes or reads.

Runs, logged models and registered versions carry these names; the runner, the
capture session, export, the loop and the demo all read them from here, so a
record written by one part is found by every other. Nothing here imports
anything: it is a table of names and the two helpers that build or parse them.
"""

from __future__ import annotations

from collections.abc import Mapping

# --- run tags --------------------------------------------------------------------------------
TAG_KIND = "nb2prod.kind"  # "capture", "reexecution", "reproduction", "sweep"
TAG_NOTEBOOK = "nb2prod.notebook"
TAG_NOTEBOOK_DIGEST = "nb2prod.notebook_digest"
TAG_ENV_DIGEST = "nb2prod.env_digest"
TAG_GIT_COMMIT = "nb2prod.git_commit"
TAG_PREVIOUS_RUN = "nb2prod.previous_run"
TAG_REQUESTED_EXPERIMENT = "nb2prod.requested_experiment"
TAG_REEXECUTES = "nb2prod.reexecutes"
TAG_REPRODUCES = "nb2prod.reproduces"
TAG_REPRODUCED = "nb2prod.reproduced"
TAG_SOURCE_DIGEST = "nb2prod.source_digest"
TAG_FAILURE = "nb2prod.failure"
TAG_FAILURE_KIND = "nb2prod.failure.kind"
TAG_SWEEP_NOTEBOOK = "nb2prod.sweep.notebook"
TAG_SWEEP_BEST_RUN = "nb2prod.sweep.best_run"
TAG_SWEEP_FAILED = "nb2prod.sweep.failed"
TAG_REGISTERED = "nb2prod.registered"  # + ".NAME" = the registered version
TAG_DATA_PREFIX = "nb2prod.data."  # + "NAME.digest"
TAG_DATA_SUFFIX = ".digest"

# MLflow's own run tags nb2prod sets.
TAG_PARENT = "mlflow.parentRunId"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"

# --- logged-model and model-version tags ----------------------------------------------------
TAG_RUN_ID = "nb2prod.run_id"
TAG_MODEL_ID = "nb2prod.model_id"
TAG_FLAVOR = "nb2prod.flavor"
TAG_CLASS = "nb2prod.class"
TAG_ARTIFACT_SHA256 = "nb2prod.artifact_sha256"
# ^ "sha256:<hex>" of the artifact ARTIFACT_HASHES (the sha256 of every model file); runs before
#   that artifact existed hold the JSON of the hashes in the tag itself.
TAG_ROUNDTRIP = "nb2prod.roundtrip"  # "passed" / "failed"
TAG_IDENTITY = "nb2prod.identity"  # digest of code, data, class, params, metrics: identical re-runs
TAG_DECISION = "nb2prod.decision"
TAG_DECISION_REASON = "nb2prod.decision.reason"
TAG_CONTENT = "nb2prod.content"  # on Bento models: the export's content hash

# --- registered-model tags ------------------------------------------------------------------
TAG_ALIAS_HISTORY = "nb2prod.alias_history"  # + ".SEQ.SUFFIX" = one alias move

# --- run artifacts --------------------------------------------------------------------------
ENVIRONMENT_JSON = "environment.json"
REQUIREMENTS_TXT = "requirements.txt"
ENVIRONMENT_DIFF_JSON = "environment_diff.json"
DATASETS_DIR = "datasets"  # datasets/NAME.json (record), datasets/NAME.parquet (holdout rows)
MODELS_DIR = "models"  # models/NAME.json (the model record)
ARTIFACT_HASHES_DIR = "integrity"  # integrity/MODEL_ID.json: sha256 of every file of a logged model
CANDIDATES_DIR = "registry"  # registry/NAME.json (a registration deferred to the runner)
SOURCE_ARTIFACT = "notebook/source.ipynb"
EXECUTED_ARTIFACT = "notebook/executed.ipynb"
HTML_ARTIFACT = "notebook/executed.html"
PARAMS_ARTIFACT = "nb2prod/params.json"
PREFLIGHT_ARTIFACT = "nb2prod/preflight_diff.json"
REPRODUCTION_ARTIFACT = "nb2prod/reproduction.json"
SWEEP_ARTIFACT = "nb2prod/sweep.json"
DECISION_ARTIFACT = "retrain/decision.json"

# Key of a model record holding the classifier's calibration map (capture/calibration.py).
MODEL_CALIBRATION = "calibration"

# Keys of a model record's ``data_digests``: "dataset:NAME" for a tracked dataset it was fitted on.
DATASET_KEY_PREFIX = "dataset:"


def data_digest_tag(dataset: str) -> str:
    """The run tag that holds the digest of the tracked dataset ``dataset``."""
    return f"{TAG_DATA_PREFIX}{dataset}{TAG_DATA_SUFFIX}"


def data_digests(tags: Mapping[str, str]) -> dict[str, str]:
    """Dataset name to digest, from a run's (or a model version's) tags."""
    return {
        key[len(TAG_DATA_PREFIX) : -len(TAG_DATA_SUFFIX)]: value
        for key, value in tags.items()
        if key.startswith(TAG_DATA_PREFIX) and key.endswith(TAG_DATA_SUFFIX)
    }


def dataset_record(dataset: str) -> str:
    """Artifact path of a dataset's record (digest, schema, profile)."""
    return f"{DATASETS_DIR}/{dataset}.json"


def dataset_rows(dataset: str) -> str:
    """Artifact path of a holdout's stored rows."""
    return f"{DATASETS_DIR}/{dataset}.parquet"


def model_record(model: str) -> str:
    """Artifact path of a registered model's record."""
    return f"{MODELS_DIR}/{model}.json"


def artifact_hashes(model_id: str) -> str:
    """Artifact path (in the run that logged it) of a logged model's file hashes."""
    return f"{ARTIFACT_HASHES_DIR}/{model_id}.json"


def candidate_record(model: str) -> str:
    """Artifact path of a registration deferred to the runner."""
    return f"{CANDIDATES_DIR}/{model}.json"
