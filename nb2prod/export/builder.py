"""Export a registered model as an immutable Bento: ``bentos/NAME/`` source, then ``NAME:VERSION``.

The steps, each checked before the next side effect:

1. Resolve ``NAME``, ``NAME@alias`` or ``NAME/VERSION`` in the registry; read what the
   capture recorded (model record, training dataset schema and profile, environment).
2. Download the model files and check every sha256 against the capture's record:
   a file changed since capture is refused here already.
3. Render the service source (manifest, ``service.py``, ``bentofile.yaml``, the
   vendored runtime) and hash it with the model files: the Bento version is
   ``v<model version>-<content hash>``, so the same export twice gives the same tag.
4. Under a file lock per model name: if the tag is in the store, stop (no-op). Else
   build the BentoML model and the Bento in a staging BentoML home, in a child process
   (BentoML reads ``BENTOML_HOME`` once per process), and move both into the store
   with ``rename``: an export killed midway leaves staging debris, never a half-built
   Bento under the final tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import ExportError

if TYPE_CHECKING:
    from mlflow import MlflowClient

MANIFEST_FILE = "nb2prod_manifest.json"
MANIFEST_FORMAT = "nb2prod-bento-v1"
RUNTIME_PACKAGE = "_nb2prod_serving"
BENTOS_DIR = "bentos"
TEMPLATE = Path(__file__).with_name("service.py.tmpl")
SERVING_DIR = Path(__file__).resolve().parent.parent / "serving"
# Packages the runtime itself imports, pinned at the versions of this environment when the
# capture did not record them.
RUNTIME_PACKAGES = ("bentoml", "pydantic", "fastapi", "prometheus-client", "pyyaml", "numpy", "pandas")
DEFAULT_SERVING = {
    "max_body_bytes": 1 << 20,
    "max_rows": 1000,
    "drift_window": 500,
    "psi_threshold": 0.25,
    "max_batch_size": 64,
    "max_latency_ms": 10_000,
    "drift_refresh_s": 15,
}
_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))?$")


@dataclass(frozen=True)
class ExportResult:
    """A built (or already built) Bento.

    Attributes:
        tag: ``NAME:VERSION`` in the BentoML store.
        name: Registered model name.
        model_version: Registry version exported.
        alias: The alias the reference named, if any.
        source_dir: ``bentos/NAME/`` (the reviewable service source).
        bentoml_home: The BentoML store it was built into.
        model_tag: The BentoML model the Bento carries.
        built: False when the tag already existed (nothing was done).
        archive: The ``.bento`` file written with ``output``, if any.
        seconds: Wall time.
        versions: Every model version the Bento carries, the exported one first.
        fallback: The version that answers when the active one raises (the one it replaced).
        canary: The canary split the service starts with, if any.
    """

    tag: str
    name: str
    model_version: str
    alias: str | None
    source_dir: Path
    bentoml_home: Path
    model_tag: str
    built: bool
    archive: Path | None
    seconds: float
    versions: tuple[str, ...] = ()
    fallback: str | None = None
    canary: dict[str, Any] | None = None


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME``, ``NAME@alias`` or ``NAME/VERSION`` -> (name, alias, version)."""
    match = _REF.match(ref.strip())
    if not match:
        raise ExportError(
            f"cannot read model reference {ref!r}",
            hint="use NAME, NAME@alias or NAME/VERSION, e.g. breast-cancer@champion or breast-cancer/3",
        )
    return match["name"], match["alias"], match["version"]


def bento_name(name: str) -> str:
    """A registered model name as a BentoML name (lowercase, ``[a-z0-9_.-]``)."""
    out = re.sub(r"[^a-z0-9_.-]", "-", name.lower()).strip("-_.")
    if not out:
        raise ExportError(
            f"model name {name!r} gives no usable Bento name", hint="register it under a plainer name"
        )
    return out


def _class_name(name: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", name)
    ident = "".join(p[:1].upper() + p[1:] for p in parts if p)
    if not ident or ident[0].isdigit():
        ident = f"Model{ident}"
    return ident


def _resolve(client: MlflowClient, name: str, alias: str | None, version: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if version:
            return client.get_model_version(name, version)
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        what = f"{name}@{alias}" if alias else f"{name}/{version}" if version else name
        raise ExportError(
            f"no registered model version {what} ({exc.error_code})",
            hint="list versions with `mlflow models` or the MLflow UI; register one with %nb2prod model",
        ) from None
    if not versions:
        raise ExportError(
            f"no registered model named {name!r}", hint="register one with %nb2prod model EST --name NAME"
        )
    return max(versions, key=lambda mv: int(mv.version))


def _training_dataset(client: MlflowClient, run_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
    from nb2prod.tracking import client as tracking

    names = [k.split(":", 1)[1] for k in record.get("data_digests", {}) if k.startswith("dataset:")]
    found = []
    for ds in names:
        data = tracking.load_json_artifact(client, run_id, f"datasets/{ds}.json")
        if data and data.get("schema"):
            found.append(data)
    train = [d for d in found if d.get("role") == "train"]
    return (train or found or [None])[0]


def _schema_from_signature(folder: Path) -> list[dict[str, Any]]:
    """Fallback contract when no tracked dataset fed the model: the MLflow signature's columns."""
    import yaml

    spec = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
    inputs = json.loads((spec.get("signature") or {}).get("inputs") or "[]")
    kinds = {"double": "float", "float": "float", "long": "int", "integer": "int", "boolean": "bool"}
    return [
        {
            "name": col["name"],
            "dtype": {"double": "float64", "float": "float32", "long": "int64", "integer": "int32"}.get(
                col["type"], ""
            ),
            "kind": kinds.get(col["type"], "string"),
            "nullable": not col.get("required", True),
            "categories": None,
            "ordered": False,
        }
        for col in inputs
        if "name" in col
    ]


def _pins(record: dict[str, Any], environment: dict[str, Any]) -> list[str]:
    """The Bento's packages: the model's captured requirements, plus the runtime's own, exact versions."""
    pins: dict[str, str] = {}
    for line in record.get("requirements") or []:
        if "==" in line:
            pkg, ver = line.split("==", 1)
            pins[pkg.strip().lower().replace("_", "-")] = ver.strip()
    captured = {k.lower().replace("_", "-"): v for k, v in (environment.get("distributions") or {}).items()}
    for pkg in RUNTIME_PACKAGES:
        if pkg in pins:
            continue
        version = captured.get(pkg)
        if version is None:
            with contextlib.suppress(importlib_metadata.PackageNotFoundError):
                version = importlib_metadata.version(pkg)
        if version:
            pins[pkg] = version
    pins.pop("nb2prod", None)
    return [f"{pkg}=={ver}" for pkg, ver in sorted(pins.items())]


def _render(
    manifest: dict[str, Any], model_tags: list[str], pins: list[str], python_version: str
) -> dict[str, str]:
    """Every file of the build context, by relative path (the runtime vendored as a package)."""
    from nb2prod._version import __version__

    name = manifest["name"]
    bname = manifest["bento_name"]
    serving = manifest["serving"]
    service = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        name=name,
        model_version=manifest["model_version"],
        nb2prod_version=__version__,
        bento_name=bname,
        bento_ident=re.sub(r"\W", "_", bname),
        class_name=_class_name(name),
        model_fields="\n    ".join(
            f'model_v{tag.split(":", 1)[1].split("-", 1)[0][1:]} = bentoml.models.BentoModel("{tag}")'
            for tag in model_tags
        ),
        max_batch_size=serving["max_batch_size"],
        max_latency_ms=serving["max_latency_ms"],
    )
    py = ".".join(python_version.split(".")[:2]) if python_version else ""
    lines = [
        "# Generated by `nb2prod export`: build with nb2prod, which pins the version tag.",
        f'service: "service:{_class_name(name)}"',
        f'name: "{bname}"',
        "labels:",
        f'  nb2prod.model: "{name}"',
        f'  nb2prod.model_version: "{manifest["model_version"]}"',
        f'  nb2prod.run_id: "{manifest["provenance"].get("run_id") or ""}"',
        "include:",
        '  - "service.py"',
        f'  - "{MANIFEST_FILE}"',
        f'  - "{RUNTIME_PACKAGE}/*.py"',
        "python:",
        "  lock_packages: false",
        "  packages:",
        *[f'    - "{pin}"' for pin in pins],
    ]
    if py:
        lines += ["docker:", f'  python_version: "{py}"']
    files = {
        "service.py": service,
        "bentofile.yaml": "\n".join(lines) + "\n",
        MANIFEST_FILE: json.dumps(manifest, indent=2, sort_keys=True) + "\n",
    }
    for module in sorted(SERVING_DIR.glob("*.py")):
        files[f"{RUNTIME_PACKAGE}/{module.name}"] = module.read_text(encoding="utf-8")
    return files


def _content_hash(files: dict[str, str], artifact_sha256: dict[str, dict[str, str]]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        text = files[rel]
        if rel == MANIFEST_FILE:
            data = json.loads(text)
            # when and through which alias it was exported do not change what is served:
            # NAME/1 and NAME@champion (-> 1) give the same Bento
            for key in ("exported_at", "bento_version", "alias"):
                data.pop(key, None)
            text = json.dumps(data, sort_keys=True)
        digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
    digest.update(json.dumps(artifact_sha256, sort_keys=True).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_tree(target: Path, files: dict[str, str]) -> None:
    """Replace ``target`` with exactly ``files`` (written aside, then swapped in)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for rel, text in files.items():
        path = fresh / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    old = target.with_name(f".{target.name}-old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _build_env(staging_home: Path) -> dict[str, str]:
    env = dict(os.environ, BENTOML_HOME=str(staging_home), BENTOML_DO_NOT_TRACK="True")
    env.pop("BENTOML_CONFIG", None)
    return env


def _run_build(
    source: Path,
    staging_home: Path,
    models: list[tuple[str, str]],
    version: str,
    labels: dict[str, str],
) -> None:
    args = {
        "build_ctx": str(source),
        "models": [{"files": files, "tag": tag} for files, tag in models],
        "version": version,
        "labels": labels,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "nb2prod.export._build", json.dumps(args)],
        env=_build_env(staging_home),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=source,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise ExportError(
            f"BentoML failed to build the Bento: {' | '.join(tail) or f'exit code {proc.returncode}'}",
            hint="see the message above; the store was left unchanged",
        )


def _publish(staging_home: Path, home: Path, kind: str, tag_name: str, version: str) -> None:
    """Move ``kind/NAME/VERSION`` from staging into the store with one rename; then point ``latest``."""
    src = staging_home / kind / tag_name / version
    dst = home / kind / tag_name / version
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dst)
    _atomic_text(dst.parent / "latest", version)


def find_bento(home: Path, bname: str, version: str) -> Path | None:
    path = home / "bentos" / bname / version
    return path if (path / "bento.yaml").is_file() else None


def latest_bento(settings: Settings, name: str) -> str:
    """The tag of the newest Bento built for ``name`` (by creation)."""
    home = settings.bentoml_home
    bname = bento_name(name)
    latest = home / "bentos" / bname / "latest"
    if latest.is_file():
        version = latest.read_text(encoding="utf-8").strip()
        if find_bento(home, bname, version):
            return f"{bname}:{version}"
    raise ExportError(
        f"no Bento of {name!r} in {home}",
        hint=f"export it first: nb2prod export {name}",
    )


@dataclass
class _Fetched:
    """One registered version, downloaded and checked against its capture record."""

    version: str
    run_id: str
    tags: dict[str, str]
    record: dict[str, Any]
    info: dict[str, Any]
    recorded: dict[str, str]
    local: Path
    files: Path
    model_tag: str

    def block(self) -> dict[str, Any]:
        """The manifest's description of this model."""
        return {
            "flavor": self.info.get("flavor"),
            "class_name": self.info.get("class_name"),
            "is_classifier": bool(self.info.get("is_classifier")),
            "has_proba": bool(self.info.get("has_proba")),
            "classes": self.info.get("classes"),
            "feature_names": self.info.get("feature_names"),
            "trusted_types": self.info.get("trusted_types") or [],
            "artifact_sha256": self.recorded,
            "bento_model_tag": self.model_tag,
            "run_id": self.run_id,
        }


def _fetch(client: MlflowClient, settings: Settings, name: str, mv: Any, tmpdir: Path) -> _Fetched:
    """Download ``mv``'s model files and check every sha256 against the capture's record.

    Raises:
        ExportError: no run, no recorded hashes, or a file that differs from capture.
    """
    import mlflow

    from nb2prod.serving.integrity import sha256_tree
    from nb2prod.tracking import client as tracking

    tags = dict(mv.tags)
    run_id = tags.get("nb2prod.run_id") or mv.run_id
    if not run_id:
        raise ExportError(f"{name}/{mv.version} has no run", hint="register models through nb2prod capture")
    record = tracking.load_json_artifact(client, run_id, f"models/{name}.json") or {}
    raw = tags.get("nb2prod.artifact_sha256")
    try:
        recorded: dict[str, str] = json.loads(raw) if raw else dict(record.get("artifact_sha256") or {})
    except ValueError:
        recorded = {}
    if not recorded:
        raise ExportError(
            f"{name}/{mv.version} carries no artifact hashes (nb2prod.artifact_sha256)",
            hint="re-capture the model with %nb2prod model: nb2prod serves only models it can verify",
        )
    info = record.get("info") or {
        "flavor": tags.get("nb2prod.flavor"),
        "class_name": tags.get("nb2prod.class"),
        "is_classifier": False,
        "has_proba": False,
        "classes": None,
        "feature_names": None,
        "trusted_types": [],
    }
    local = Path(
        mlflow.artifacts.download_artifacts(
            # the logged model, as the capture hashed it (a registry download rewrites
            # registered_model_meta)
            artifact_uri=f"models:/{tags['nb2prod.model_id']}" if tags.get("nb2prod.model_id") else mv.source,
            dst_path=str(tmpdir / f"download-{mv.version}"),
            tracking_uri=settings.tracking_uri,
        )
    )
    actual = sha256_tree(local)
    changed = [rel for rel, want in recorded.items() if actual.get(rel) != want]
    if changed:
        raise ExportError(
            f"model file {changed[0]} of {name}/{mv.version} differs from what was recorded at capture"
            + (" (missing)" if changed[0] not in actual else ""),
            hint="the artifact was changed after capture; re-capture the model from the notebook",
        )
    files = tmpdir / f"model-{mv.version}"
    for rel in recorded:
        dst = files / "mlflow" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local / rel, dst)
    model_hash = hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()[:12]
    return _Fetched(
        version=str(mv.version),
        run_id=run_id,
        tags=tags,
        record=record,
        info=info,
        recorded=recorded,
        local=local,
        files=files,
        model_tag=f"{bento_name(name)}:v{mv.version}-{model_hash}",
    )


def _companions(
    client: MlflowClient, name: str, primary: str, alias: str | None, extra: list[str] | tuple[str, ...]
) -> tuple[list[str], str | None]:
    """Versions the Bento carries beside ``primary``, and which one is the fallback.

    The fallback is the version the champion replaced (the alias history), so a rollback
    and the answer-from-previous fallback need no rebuild; the ``challenger`` alias rides
    along for a canary; ``extra`` are asked for by name.
    """
    from nb2prod.tracking import registry

    fallback = registry.replaced_version(client, name, primary, alias or registry.CHAMPION)
    out: list[str] = []
    for version in (fallback, registry.alias_version(client, name, registry.CHALLENGER), *extra):
        if version and str(version) != primary and str(version) not in out:
            out.append(str(version))
    return out, fallback


def export_model(
    ref: str,
    *,
    output: str | Path | None = None,
    settings: Settings | None = None,
    serving: dict[str, Any] | None = None,
    with_versions: list[str] | tuple[str, ...] = (),
    canary: tuple[str, float] | None = None,
) -> ExportResult:
    """Export ``NAME[@alias|/version]`` as the Bento ``NAME:v<version>-<hash>`` (see module doc).

    The Bento also carries the version the exported one replaced as champion (the
    fallback and the rollback target), the ``challenger`` alias if set, and
    ``with_versions``; ``canary`` = (version, percent) starts it with a canary split.

    Raises:
        ExportError: unknown model, artifacts changed since capture, a companion version
            with other input columns, or the build failed.
    """
    from nb2prod.capture.models import TRUSTED_MODULE_PREFIXES
    from nb2prod.tracking import client as tracking

    started = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = settings or load_settings()
    name, alias, version = parse_ref(ref)
    unknown = set(serving or {}) - set(DEFAULT_SERVING)
    if unknown:
        raise ExportError(f"unknown serving options {sorted(unknown)}", hint=f"use {sorted(DEFAULT_SERVING)}")
    client = tracking.client(settings)
    mv = _resolve(client, name, alias, version)
    companions, fallback = _companions(client, name, str(mv.version), alias, list(with_versions))
    if canary is not None:
        if str(canary[0]) == str(mv.version):
            raise ExportError(
                f"the canary version {canary[0]} is the exported version itself",
                hint="give the challenger's version: --canary-version V",
            )
        if not 0 < canary[1] <= 100:
            raise ExportError(f"canary percent {canary[1]} is not in (0, 100]", hint="e.g. --canary 10")
        if str(canary[0]) not in companions:
            companions.append(str(canary[0]))

    with tempfile.TemporaryDirectory(prefix="nb2prod-export-") as tmp:
        tmpdir = Path(tmp)
        main = _fetch(client, settings, name, mv, tmpdir)
        run_id, tags, record, info = main.run_id, main.tags, main.record, main.info
        environment = tracking.load_json_artifact(client, run_id, "environment.json") or {}

        dataset = _training_dataset(client, run_id, record)
        target_name = dataset.get("target") if dataset else None
        if dataset:
            features = info.get("feature_names") or [
                c["name"] for c in dataset["schema"] if c["name"] != target_name
            ]
            by_name = {c["name"]: c for c in dataset["schema"]}
            missing = [f for f in features if f not in by_name]
            if missing:
                raise ExportError(
                    f"the training dataset {dataset['name']!r} has no column {missing[0]!r} the model uses",
                    hint="track the frame the model was fitted on with %nb2prod data DF --role train",
                )
            schema = [by_name[f] for f in features]
            profile = dataset.get("profile") or {}
            reference = {f: profile[f] for f in features if f in profile}
            target = (
                {"name": target_name, "profile": profile[target_name]} if target_name in profile else None
            )
        else:
            schema = _schema_from_signature(main.local)
            reference, target = {}, None
        if not schema:
            raise ExportError(
                f"no input schema for {name}/{mv.version}: no tracked training dataset and no signature",
                hint="track the training frame with %nb2prod data DF --role train before %nb2prod model",
            )

        carried = [main]
        columns = [c["name"] for c in schema]
        for other in companions:
            fetched = _fetch(client, settings, name, _resolve(client, name, None, other), tmpdir)
            wants = fetched.info.get("feature_names")
            if wants is not None and list(wants) != columns:
                if (
                    other == fallback
                    and other not in with_versions
                    and (canary is None or other != canary[0])
                ):
                    fallback = None  # the replaced version reads other columns: it cannot stand in
                    continue
                raise ExportError(
                    f"{name}/{other} reads other input columns than {name}/{mv.version}",
                    hint="one Bento serves one input contract: export the versions separately",
                )
            carried.append(fetched)

        bname = bento_name(name)
        model_tag = main.model_tag
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "bento_name": bname,
            "model_version": str(mv.version),
            "model_uri": f"models:/{name}/{mv.version}",
            "alias": alias,
            "bento_model_tag": model_tag,
            "model": {k: v for k, v in main.block().items() if k not in ("bento_model_tag", "run_id")},
            "models": {f.version: f.block() for f in carried},
            "fallback": fallback if fallback in {f.version for f in carried} else None,
            "trusted_prefixes": list(TRUSTED_MODULE_PREFIXES),
            "schema": schema,
            "reference": reference,
            "reference_rows": dataset.get("n_rows") if dataset else None,
            "target": target,
            "provenance": {
                "run_id": run_id,
                "model_id": tags.get("nb2prod.model_id"),
                "git_commit": tags.get("nb2prod.git_commit"),
                "env_digest": tags.get("nb2prod.env_digest"),
                "notebook": tags.get("nb2prod.notebook"),
                "notebook_digest": tags.get("nb2prod.notebook_digest"),
                "data_digests": record.get("data_digests")
                or {k: v for k, v in tags.items() if k.startswith("nb2prod.data.")},
                "python_version": environment.get("python_version"),
                "dataset": dataset.get("name") if dataset else None,
            },
            "serving": {
                **DEFAULT_SERVING,
                **(serving or {}),
                "canary": {"version": str(canary[0]), "percent": float(canary[1])} if canary else None,
            },
        }
        pins = _pins(record, environment)
        files = _render(
            manifest, [f.model_tag for f in carried], pins, str(environment.get("python_version") or "")
        )
        content = _content_hash(files, {f.version: f.recorded for f in carried})
        bversion = f"v{mv.version}-{content[:12]}"
        tag = f"{bname}:{bversion}"
        source_dir = settings.home / BENTOS_DIR / name
        home = settings.bentoml_home
        built = False
        with _lock(home / ".nb2prod-locks" / f"{bname}.lock"):
            existing = find_bento(home, bname, bversion)
            if existing is None:
                manifest["exported_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                manifest["bento_version"] = bversion
                files[MANIFEST_FILE] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
                _write_tree(source_dir, files)
                _clean_staging(home, bname)
                staging = Path(tempfile.mkdtemp(prefix=f".staging-{bname}-{os.getpid()}-", dir=_ensure(home)))
                try:
                    _run_build(
                        source_dir,
                        staging,
                        [(str(f.files), f.model_tag) for f in carried],
                        bversion,
                        {"nb2prod.content": content[:32]},
                    )
                    for f in carried:
                        _publish(staging, home, "models", bname, f.model_tag.split(":", 1)[1])
                    _publish(staging, home, "bentos", bname, bversion)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
                built = True
            else:
                # The same content was built before: restore its source if the folder drifted.
                src = existing / "src"
                current = source_dir / MANIFEST_FILE
                if not current.is_file() or current.read_bytes() != (src / MANIFEST_FILE).read_bytes():
                    stored = {
                        p.relative_to(src).as_posix(): p.read_text(encoding="utf-8")
                        for p in src.rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts
                    }
                    stored["bentofile.yaml"] = files["bentofile.yaml"]
                    _write_tree(source_dir, stored)
                _atomic_text(home / "bentos" / bname / "latest", bversion)
    archive = _archive(home, tag, Path(output)) if output else None
    return ExportResult(
        tag=tag,
        name=name,
        model_version=str(mv.version),
        alias=alias,
        source_dir=source_dir,
        bentoml_home=home,
        model_tag=model_tag,
        built=built,
        archive=archive,
        seconds=time.perf_counter() - started,
        versions=tuple(f.version for f in carried),
        fallback=manifest["fallback"],
        canary=manifest["serving"]["canary"],
    )


def _clean_staging(home: Path, bname: str) -> None:
    """Remove what killed exports of ``bname`` left in staging (their process is gone)."""
    for path in home.glob(f".staging-{bname}-*"):
        pid = path.name[len(f".staging-{bname}-") :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _archive(home: Path, tag: str, output: Path) -> Path:
    output = output.expanduser().resolve()
    if output.suffix != ".bento":
        raise ExportError(f"{output} does not end in .bento", hint="name the archive NAME.bento")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.part.bento")
    code = "import sys, bentoml; bentoml.export_bento(sys.argv[1], sys.argv[2])"
    proc = subprocess.run(
        [sys.executable, "-c", code, tag, str(tmp)],
        env=dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise ExportError(f"writing {output} failed: {' | '.join(tail)}", hint="check the folder is writable")
    tmp.replace(output)
    return output
