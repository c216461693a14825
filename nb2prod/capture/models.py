"""Fitted models: what they are, whether they can be saved safely, and proof that they load.

The checks here run *before* anything is logged, so a model that cannot be
saved or loaded never reaches the registry:

* :func:`inspect_model` finds the flavor (scikit-learn, xgboost, lightgbm,
  generic pyfunc), checks the model is fitted, and refuses classes that live
  in the notebook's ``__main__`` (they cannot be imported by a service).
* :func:`skops_trusted_types` lists the types a scikit-learn model needs when
  loaded with skops. The allow-list lives here, in our code, never in the
  artifact: a type outside it needs the user's explicit ``trust``.
* :func:`roundtrip_check` loads the logged model in a fresh Python process
  (:mod:`nb2prod.capture.roundtrip`) and compares its predictions with the live model's.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nb2prod.capture import roundtrip as fresh_process
from nb2prod.exceptions import ModelError, RoundTripError

SKLEARN = "sklearn"
XGBOOST = "xgboost"
LIGHTGBM = "lightgbm"
PYFUNC = "pyfunc"

# Modules whose types a skops load may trust without asking. Anything else,
# a notebook class above all, must be trusted by name by the user.
TRUSTED_MODULE_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


@dataclass(frozen=True)
class ModelInfo:
    """What nb2prod learnt about a live model object.

    Attributes:
        flavor: ``sklearn``, ``xgboost``, ``lightgbm`` or ``pyfunc``.
        class_name: Fully qualified class of the model.
        is_classifier: Whether it predicts classes.
        has_proba: Whether it has ``predict_proba``.
        feature_names: Columns it was fitted on, when it knows them.
        n_features: Number of input features, when known.
        classes: Class labels of a classifier, as strings.
        params: Its hyper-parameters, as strings (scikit-learn ``get_params``).
        trusted_types: Types a skops load needs (scikit-learn only).
    """

    flavor: str
    class_name: str
    is_classifier: bool
    has_proba: bool
    feature_names: list[str] | None
    n_features: int | None
    classes: list[str] | None
    params: dict[str, str] = field(default_factory=dict)
    trusted_types: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _flavor(model: Any) -> str:
    module = type(model).__module__.split(".")[0]
    if module == XGBOOST:
        return XGBOOST
    if module == LIGHTGBM:
        return LIGHTGBM
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        BaseEstimator = ()
    if isinstance(model, BaseEstimator):
        return SKLEARN
    if callable(getattr(model, "predict", None)):
        return PYFUNC
    raise ModelError(
        f"cannot capture a {_qualname(model)}: it has no predict method",
        hint="pass a fitted estimator (scikit-learn, xgboost, lightgbm) or an object with predict(X)",
    )


def _main_classes(model: Any) -> list[str]:
    """Classes defined in ``__main__`` anywhere in a scikit-learn model's parameter tree."""
    found: list[str] = []
    seen: set[int] = set()

    def walk(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        cls = type(obj)
        if cls.__module__ == "__main__":
            found.append(f"__main__.{cls.__qualname__}")
        if isinstance(obj, list | tuple):
            for item in obj:
                walk(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                walk(item)
        get_params = getattr(obj, "get_params", None)
        if callable(get_params) and not isinstance(obj, type):
            try:
                params = get_params(deep=False)
            except Exception:
                return
            for value in params.values():
                walk(value)
        for attr in ("steps", "transformers_", "estimators_"):
            value = getattr(obj, attr, None)
            if isinstance(value, list | tuple):
                walk(value)

    walk(model)
    return sorted(set(found))


def _main_class_error(names: list[str], variable: str) -> ModelError:
    listed = ", ".join(names)
    return ModelError(
        f"model '{variable}' uses {listed}, defined in the notebook itself; a saved model only "
        "stores a reference to that class, so a service (or a fresh kernel) cannot load it",
        hint="move the class into a .py module next to the notebook, import it from there, re-fit, "
        "and capture again",
    )


def _is_fitted(model: Any, flavor: str) -> bool:
    if flavor == SKLEARN:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError:
            return False
        except TypeError:
            return True
        return True
    if flavor == XGBOOST:
        try:
            model.get_booster()
        except Exception:
            return False
    if flavor == LIGHTGBM:
        return getattr(model, "fitted_", True) is not False and getattr(model, "_Booster", 1) is not None
    return True


def _params(model: Any, limit: int = 200) -> dict[str, str]:
    """Hyper-parameters as strings; nested estimators' params by their ``step__param`` names."""
    get_params = getattr(model, "get_params", None)
    if not callable(get_params):
        return {}
    try:
        raw = get_params(deep=True)
    except Exception:
        return {}
    out: dict[str, str] = {}
    for key, value in sorted(raw.items()):
        if not isinstance(value, str | int | float | bool | type(None)):
            continue  # estimators and steps: their own params are listed under step__name
        out[key] = str(value)[:500]
        if len(out) >= limit:
            break
    return out


def skops_trusted_types(model: Any, trust: tuple[str, ...] = (), variable: str = "model") -> list[str]:
    """Types a skops load of ``model`` must trust, checked against our allow-list.

    Raises:
        ModelError: a type is neither allow-listed nor in ``trust``, or lives in ``__main__``.
    """
    import skops.io as sio

    try:
        payload = sio.dumps(model)
    except Exception as exc:
        raise ModelError(
            f"model '{variable}' cannot be serialised with skops ({type(exc).__name__}: {exc})",
            hint="use scikit-learn components, or an importable module for custom ones",
        ) from exc
    needed = sio.get_untrusted_types(data=payload)
    main = [name for name in needed if name.startswith("__main__.")]
    if main:
        raise _main_class_error(main, variable)
    refused = [name for name in needed if not name.startswith(TRUSTED_MODULE_PREFIXES) and name not in trust]
    if refused:
        listed = ", ".join(refused)
        raise ModelError(
            f"model '{variable}' needs types that nb2prod does not trust by default: {listed}",
            hint=f"if you wrote or trust them, capture with --trust {' --trust '.join(refused)} "
            f"(Python: trust=[...])",
        )
    return sorted(needed)


def inspect_model(model: Any, *, variable: str = "model", trust: tuple[str, ...] = ()) -> ModelInfo:
    """Check a live model can be captured and describe it.

    Raises:
        ModelError: not a model, not fitted, uses notebook classes or untrusted types.
    """
    if isinstance(model, type):
        raise ModelError(
            f"'{variable}' is a class, not a fitted model",
            hint=f"create and fit an instance, e.g. clf = {model.__name__}().fit(X, y)",
        )
    flavor = _flavor(model)
    if not _is_fitted(model, flavor):
        raise ModelError(
            f"model '{variable}' ({type(model).__name__}) is not fitted",
            hint=f"call {variable}.fit(X, y) before capturing it",
        )
    if type(model).__module__ == "__main__":
        raise _main_class_error([f"__main__.{type(model).__qualname__}"], variable)
    trusted: list[str] = []
    if flavor == SKLEARN:
        main = _main_classes(model)
        if main:
            raise _main_class_error(main, variable)
        trusted = skops_trusted_types(model, trust, variable)
    names = getattr(model, "feature_names_in_", None)
    feature_names = [str(n) for n in names] if names is not None else None
    n_features = getattr(model, "n_features_in_", None)
    classes = getattr(model, "classes_", None)
    is_classifier = classes is not None or getattr(model, "_estimator_type", None) == "classifier"
    return ModelInfo(
        flavor=flavor,
        class_name=_qualname(model),
        is_classifier=bool(is_classifier),
        has_proba=callable(getattr(model, "predict_proba", None)),
        feature_names=feature_names,
        n_features=int(n_features) if n_features is not None else None,
        classes=[str(c) for c in classes] if classes is not None else None,
        params=_params(model),
        trusted_types=trusted,
    )


def check_features(info: ModelInfo, columns: list[str] | None, n_columns: int, variable: str) -> None:
    """The training frame must have the columns the model was fitted on, in that order."""
    if info.feature_names is not None and columns is not None and info.feature_names != columns:
        missing = [c for c in info.feature_names if c not in columns]
        extra = [c for c in columns if c not in info.feature_names]
        detail = []
        if missing:
            detail.append(f"missing {missing[:5]}")
        if extra:
            detail.append(f"extra {extra[:5]}")
        if not detail:
            detail.append("same columns in another order")
        raise ModelError(
            f"model '{variable}' was fitted on other columns than the X given ({'; '.join(detail)})",
            hint="pass the exact frame the model was fitted on with --X, or track it with --role train",
        )
    if info.n_features is not None and info.n_features != n_columns:
        raise ModelError(
            f"model '{variable}' expects {info.n_features} features, X has {n_columns}",
            hint="pass the exact frame the model was fitted on with --X",
        )


def to_signature_types(frame: Any) -> Any:
    """Cast columns MLflow's signature cannot carry as they are (categories become strings)."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        return frame
    out = frame
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            if out is frame:
                out = frame.copy()
            out[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return out


@dataclass(frozen=True)
class RoundTrip:
    """Result of loading a saved model in a fresh process.

    Attributes:
        ok: Predictions equal.
        rows: Rows compared.
        seconds: Wall time of the check.
        stage: Where it failed: ``load``, ``predict`` or ``compare`` (None when ok).
        detail: What failed.
        warm: The check ran in a process started (and warmed up) before the model was ready.
    """

    ok: bool
    rows: int
    seconds: float
    stage: str | None = None
    detail: str | None = None
    warm: bool = False


# Variables that change under a waiting process without changing what a check does: set by
# importing scikit-learn (and joblib), which the process imports itself, and pytest's note of the
# test phase it is in.
_SET_ON_IMPORT = frozenset({"KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK", "PYTEST_CURRENT_TEST"})


def _same_env(a: dict[str, str], b: dict[str, str]) -> bool:
    keys = (set(a) | set(b)) - _SET_ON_IMPORT
    return all(a.get(k) == b.get(k) for k in keys)


def _roundtrip_env(tracking_uri: str) -> dict[str, str]:
    """The fresh process's environment: ours, on the given store, without a start-up script."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, PYTHONHASHSEED="0")
    env.pop("PYTHONSTARTUP", None)
    return env


class _Worker:
    """One fresh process for one check: warm (``--worker``: started ahead, job given later on stdin)
    or cold (``job`` given: started with it)."""

    def __init__(self, env: dict[str, str], job: tuple[str, Path] | None = None) -> None:
        self.env = env
        self.warm = job is None
        # A neutral working folder: nothing of the notebook's folder is importable from it.
        self.home = Path(tempfile.mkdtemp(prefix="nb2prod-roundtrip-worker-"))
        self.log = self.home / "output.log"
        args = [fresh_process.WORKER_FLAG] if job is None else [job[0], str(job[1])]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", fresh_process.__name__, *args],
                stdin=subprocess.PIPE if job is None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.home,
                text=True,
                # Its own process group: a kernel's shutdown signals every child of its group and
                # waits for them to go (a dead but unreaped child counts), long enough for Jupyter
                # to kill the kernel before its atexit hooks (the run's end) run. A warm process
                # ends by itself when the kernel goes (its stdin closes); ``stop`` ends it earlier.
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """Warm-up done (imports and store)."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace").startswith(fresh_process.READY)
        except OSError:
            return False

    def submit(self, model_uri: str, folder: Path) -> None:
        """Give a warm process its job (it runs it as soon as its warm-up is done)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps([model_uri, str(folder)]) + "\n")
            self.proc.stdin.close()
        except OSError:  # it died: the missing verdict says so
            pass

    def finish(self, timeout: float) -> str:
        """Wait for the process to end; its output (for errors). Raises ``TimeoutExpired``."""
        try:
            self.proc.wait(timeout=timeout)
        except BaseException:  # a timeout, or the user interrupted the cell
            self.stop()
            raise
        output = self._output()
        self._cleanup()
        return output

    def _output(self) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text.removeprefix(fresh_process.READY).strip() or f"exit code {self.proc.returncode}"

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        shutil.rmtree(self.home, ignore_errors=True)


class WarmRoundTrip:
    """At most one warm round-trip process, started ahead of need (``%nb2prod start``).

    A check takes it only when it was started with exactly the environment the check needs (same
    store, same variables): otherwise it is stopped and the check starts a cold process, as
    before. Each process serves one check; the next one is started after it.
    """

    def __init__(self) -> None:
        self._worker: _Worker | None = None

    def prewarm(self, tracking_uri: str) -> None:
        """Start a warm process for the next check, unless a matching one is already waiting."""
        env = _roundtrip_env(tracking_uri)
        worker = self._worker
        if worker is not None and worker.alive() and _same_env(worker.env, env):
            return
        self.stop()
        try:
            self._worker = _Worker(env)
        except OSError:  # no process to spare: the check starts a cold one
            self._worker = None

    def take(self, env: dict[str, str]) -> _Worker | None:
        """The waiting process if it fits ``env`` (it is then no longer waiting), else None."""
        worker, self._worker = self._worker, None
        if worker is None:
            return None
        if worker.alive() and _same_env(worker.env, env):
            return worker
        worker.stop()
        return None

    def waiting(self) -> bool:
        """A warm process is waiting (started, maybe still warming up)."""
        return self._worker is not None and self._worker.alive()

    def ready(self) -> bool:
        """The waiting process has finished warming up."""
        return self._worker is not None and self._worker.alive() and self._worker.ready()

    def stop(self) -> None:
        """Stop the waiting process, if any (session end, interpreter exit)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()


WARM = WarmRoundTrip()
"""This interpreter's warm round-trip process (one kernel, one capture session at a time)."""
atexit.register(WARM.stop)


def roundtrip_check(
    model_uri: str,
    tracking_uri: str,
    sample: Any,
    expected: Any,
    expected_proba: Any | None,
    *,
    variable: str,
    artifact_sha256: dict[str, str] | None = None,
    timeout: float = 300.0,
) -> RoundTrip:
    """Load ``model_uri`` in a fresh interpreter and compare its predictions with ``expected``.

    With ``artifact_sha256``, the fresh process first checks every downloaded file against it and
    refuses to deserialise anything that differs: the same check a service makes.

    Raises:
        RoundTripError: the model did not load, or predicted differently; the message names why.
    """
    return begin_roundtrip(
        model_uri,
        tracking_uri,
        sample,
        expected,
        expected_proba,
        variable=variable,
        artifact_sha256=artifact_sha256,
        timeout=timeout,
    ).wait()


class PendingRoundTrip:
    """A round-trip check under way in its fresh process; :meth:`wait` gives its verdict."""

    def __init__(self, folder: Path, worker: _Worker, variable: str, rows: int, timeout: float) -> None:
        import time

        self.folder = folder
        self.worker = worker
        self.variable = variable
        self.rows = rows
        self.timeout = timeout
        self.started = time.perf_counter()

    def wait(self) -> RoundTrip:
        """Block until the fresh process has answered.

        Raises:
            RoundTripError: the model did not load, or predicted differently; the message names why.
        """
        import time

        try:
            try:
                output = self.worker.finish(self.timeout)
            except subprocess.TimeoutExpired as exc:
                raise RoundTripError(
                    f"loading model '{self.variable}' in a fresh process took over {self.timeout:.0f} s",
                    hint="check the model size and the tracking store's speed",
                ) from exc
            result_path = self.folder / fresh_process.RESULT_FILE
            if result_path.exists():
                result = json.loads(result_path.read_text(encoding="utf-8"))
            else:
                tail = output.strip().splitlines()[-3:]
                result = {"ok": False, "stage": "load", "detail": " | ".join(tail) or "no result"}
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        trip = RoundTrip(
            ok=bool(result.get("ok")),
            rows=int(result.get("rows", self.rows)),
            seconds=time.perf_counter() - self.started,
            stage=result.get("stage"),
            detail=result.get("detail"),
            warm=self.worker.warm,
        )
        if not trip.ok:
            raise RoundTripError(_roundtrip_message(trip, self.variable), hint=_roundtrip_hint(trip))
        return trip


def begin_roundtrip(
    model_uri: str,
    tracking_uri: str,
    sample: Any,
    expected: Any,
    expected_proba: Any | None,
    *,
    variable: str,
    artifact_sha256: dict[str, str] | None = None,
    timeout: float = 300.0,
) -> PendingRoundTrip:
    """Start :func:`roundtrip_check` in its fresh process (the warm one when it fits) and return at
    once: the caller records what does not depend on the verdict meanwhile, then waits."""
    import numpy as np
    import pandas as pd

    folder = Path(tempfile.mkdtemp(prefix="nb2prod-roundtrip-"))
    try:
        frame = sample if isinstance(sample, pd.DataFrame) else pd.DataFrame(np.asarray(sample))
        frame.to_pickle(folder / fresh_process.SAMPLE_FILE)  # our own temp file, read back by our own process
        arrays = {"expected": np.asarray(expected)}
        if expected_proba is not None:
            arrays["expected_proba"] = np.asarray(expected_proba)
        np.savez(folder / fresh_process.EXPECTED_FILE, **arrays)  # type: ignore[arg-type]
        if artifact_sha256 is not None:
            (folder / fresh_process.SHA256_FILE).write_text(json.dumps(artifact_sha256), encoding="utf-8")
        env = _roundtrip_env(tracking_uri)
        worker = WARM.take(env)
        if worker is None:
            # Run from a neutral folder so notebook-local modules are not importable by accident:
            # a service will not have the notebook folder on its path either.
            worker = _Worker(env, job=(model_uri, folder))
        else:
            worker.submit(model_uri, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return PendingRoundTrip(folder, worker, variable, len(frame), timeout)


def _roundtrip_message(trip: RoundTrip, variable: str) -> str:
    if trip.stage == "integrity":
        return f"the saved model '{variable}' differs from what was written: {trip.detail}"
    if trip.stage == "load":
        return f"the saved model '{variable}' does not load in a fresh Python process: {trip.detail}"
    if trip.stage == "predict":
        return f"the saved model '{variable}' loads but fails to predict: {trip.detail}"
    return f"the saved model '{variable}' predicts differently from the live one: {trip.detail}"


def _roundtrip_hint(trip: RoundTrip) -> str:
    detail = trip.detail or ""
    if "__main__" in detail:
        return "move classes defined in the notebook into an importable .py module, re-fit, capture again"
    if "ModuleNotFoundError" in detail or "No module named" in detail:
        return "install the missing package in this environment (and import it in the notebook)"
    if trip.stage == "compare":
        return "the model is not deterministic after reload; check custom code and random state"
    return "nothing was registered; fix the cause above and capture again"
