"""From one prediction back to the notebook that made it, verifying every hash on the way.

:func:`trace` follows the chain of one served or batch-scored row (its request id):

1. the logged row (input, answer, time, source ``online``/``batch``) in the model's
   prediction store, and the model version that answered it; how it was routed then
   (``champion``, ``canary``, ``fallback``), replayed from the alias history and the
   switches the service recorded;
2. the Bento that carried that version when the row was answered: its tag, the digest of
   its source listing (the tag's content hash), its manifest;
3. the registered version, its alias history up to that time, its MLflow run;
4. the run's notebook path, git commit, code-cell digest, environment digest and the
   digests of the data the model was trained on.

Every hash that can be checked is checked, each a :class:`Link`:

* ``bento source``: the Bento's files against its listing, the listing against its tag
  (:func:`nb2prod.serving.integrity.verify_source`, the service's own start-up check);
* ``bento model files``: the model files in the BentoML store against the manifest's sha256;
* ``capture record``: the manifest's sha256 against the capture's (the registry tag);
* ``mlflow model files``: the logged model's files against the capture's sha256;
* ``provenance``: run, commit, notebook and environment digests of the manifest against
  the registered version's and the run's tags;
* ``environment``: the run's ``environment.json`` re-digested against the run's tag;
* ``data digest of 'D'``: the manifest's, the registered version's, the run's and the
  dataset record's digests of each training dataset agree;
* ``data rows of 'D'``: stored holdout rows (test, reference) re-digested against their record.

A broken link names the artifact and the two hashes. The core returns a :class:`Trace`;
``nb2prod trace`` and ``%nb2prod trace`` show it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import LifecycleError, ModelIntegrityError
from nb2prod.lifecycle.served import store_location
from nb2prod.lifecycle.switch import event_time, http_switches, mlflow_client
from nb2prod.serving.redact import redact_uri
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nb2prod.serving.manifest import Manifest
    from nb2prod.tracking.registry import AliasEvent

__all__ = ["Link", "Trace", "trace"]

SHADOW = "shadow"
BATCH = "batch"


@dataclass(frozen=True)
class Link:
    """One checked link of the chain.

    Attributes:
        name: What was checked (``bento source``, ``bento model files``, ...).
        ok: True: the hashes agree; False: broken; None: could not be checked (``detail`` says why).
        artifact: The artifact found wrong (a file, a tag, a record), when broken.
        expected: The hash it should have.
        actual: The hash it has.
        detail: One line: what was compared, or what is wrong.
    """

    name: str
    ok: bool | None
    detail: str
    artifact: str | None = None
    expected: str | None = None
    actual: str | None = None


@dataclass(frozen=True)
class Trace:
    """The chain of one prediction (see the module doc).

    Attributes:
        name: Registered model.
        request_id: The row's request id.
        row: ``ts``, ``at`` (ISO), ``source`` (``online``/``batch``), ``monitor``,
            ``model_version``, ``features``, ``prediction`` (the logged answer).
        shadow: Shadow answers logged for the same request (version, answer).
        route: ``champion``, ``canary``, ``fallback``, ``batch`` or ``unknown``.
        active_then: The version that should have answered at that time, and the canary.
        bento: Tag of the Bento that carried the version then (None: none found).
        bento_digest: sha256 of its source listing (the first 12 hex are in its tag).
        registered: The registered version: ``version``, ``run_id``, ``model_id``, ``source``.
        aliases: Alias -> version at the row's time.
        history: The alias moves (and HTTP switches) up to the row's time.
        run: ``run_id``, ``notebook``, ``git_commit``, ``notebook_digest``, ``env_digest``,
            ``data_digests`` (dataset -> digest), ``experiment_id``.
        links: Every check made, in chain order.
    """

    name: str
    request_id: str
    row: dict[str, Any]
    shadow: list[dict[str, Any]]
    route: str
    active_then: dict[str, Any]
    bento: str | None
    bento_digest: str | None
    registered: dict[str, Any]
    aliases: dict[str, str | None]
    history: list[AliasEvent]
    run: dict[str, Any]
    links: list[Link] = field(default_factory=list)

    @property
    def broken(self) -> list[Link]:
        """The links whose hashes disagree."""
        return [link for link in self.links if link.ok is False]

    @property
    def ok(self) -> bool:
        """Every link that could be checked holds."""
        return not self.broken

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["history"] = [e.to_dict() for e in self.history]
        out["ok"] = self.ok
        out["broken"] = [asdict(link) for link in self.broken]
        return out


# ----------------------------------------------------------------------------- the row


def _logged_rows(location: str, request_id: str) -> list[tuple[Any, ...]]:
    from nb2prod.serving.store import Store, is_sqlite_file, store_path

    if is_sqlite_file(location) and not store_path(location).is_file():
        return []
    from nb2prod.batch import rows as batch_rows
    from nb2prod.monitoring.window import BATCH

    store = Store(location, readonly=is_sqlite_file(location))
    try:
        found = store.query(
            "SELECT ts, monitor, model_version, features, prediction FROM predictions "
            "WHERE request_id = :rid ORDER BY seq",
            {"rid": request_id},
        )
        if not found:  # a batch row: in its chunk's payload
            row = batch_rows.lookup(store, [request_id]).get(request_id)
            if row is not None:
                found = [(row.ts, BATCH, row.version, json.dumps(row.features), json.dumps(row.answer))]
        return found
    finally:
        store.close()


def _fallbacks_near(location: str, version: str, ts: float) -> int:
    """Fallback events of ``version`` (the one that raised) within a minute of ``ts``."""
    from nb2prod.serving.store import Store, is_sqlite_file

    store = Store(location, readonly=is_sqlite_file(location))
    try:
        rows = store.query(
            "SELECT COUNT(*) FROM events WHERE kind = 'fallback' AND model_version = :v "
            "AND ts >= :a AND ts <= :b",
            {"v": version, "a": ts - 60, "b": ts + 60},
        )
    finally:
        store.close()
    return int(rows[0][0]) if rows else 0


def _state_at(events: list[AliasEvent], ts: float) -> tuple[dict[str, str | None], dict[str, Any]]:
    """(alias -> version, {active, canary}) after replaying the events up to ``ts``.

    Event times are recorded to the second, rounded down: an event counts as before the row
    when its recorded second is not after the row's time (a row answered in the same second
    just before a switch is read as after it).
    """
    aliases: dict[str, str | None] = {}
    active: str | None = None
    canary: str | None = None
    for event in events:
        if event_time(event) > ts:
            break
        if event.alias.startswith("service:"):
            if event.alias == "service:canary":
                canary = event.to_version
            else:
                active = event.to_version
            continue
        aliases[event.alias] = event.to_version
        if event.alias == "champion":
            active, canary = event.to_version, None
        elif event.alias == "challenger" and event.reason.startswith("canary"):
            canary = None if event.reason.startswith("canary 0%") else event.to_version
    return aliases, {"active": active, "canary": canary}


# ----------------------------------------------------------------------------- the Bento


def _bento_carrying(settings: Settings, name: str, version: str, ts: float) -> tuple[str, Path] | None:
    """The Bento (tag, src folder) that carried ``version`` at ``ts``: the newest built before it, else the newest."""
    from nb2prod.export.bento_store import BENTOS, SOURCE, bento_name
    from nb2prod.serving.manifest import MANIFEST_FILE

    bname = bento_name(name)
    root = settings.bentoml_home / BENTOS / bname
    found: list[tuple[float, str, Path]] = []
    for folder in sorted(root.glob("*/")) if root.is_dir() else []:
        src = folder / SOURCE
        try:
            data = json.loads((src / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        carried = set((data.get("models") or {}).keys()) or {str(data.get("model_version"))}
        if version not in carried:
            continue
        try:
            built = datetime.fromisoformat(str(data.get("exported_at"))).timestamp()
        except ValueError:
            built = folder.stat().st_mtime
        found.append((built, f"{bname}:{folder.name}", src))
    if not found:
        return None
    before = [f for f in found if f[0] <= ts]
    _, tag, src = max(before or found, key=lambda f: f[0])
    return tag, src


def _first_difference(want: dict[str, str], got: dict[str, str]) -> tuple[str, str | None, str | None] | None:
    for rel in sorted(set(want) | set(got)):
        if want.get(rel) != got.get(rel):
            return rel, want.get(rel), got.get(rel)
    return None


def _check_bento(
    settings: Settings, tag: str, src: Path, version: str, capture: dict[str, str]
) -> tuple[list[Link], str | None, Manifest | None]:
    """The Bento's links: its source, its model files, its record of the capture's hashes."""
    from nb2prod.export.bento_store import MODELS
    from nb2prod.serving.integrity import (
        SOURCE_LIST,
        IntegrityError,
        listing_hash,
        sha256_tree,
        verify_source,
    )
    from nb2prod.serving.loading import MODEL_SUBDIR
    from nb2prod.serving.manifest import Manifest, ManifestError

    links: list[Link] = []
    bversion = tag.split(":", 1)[1]
    digest = None
    try:
        listing = json.loads((src / SOURCE_LIST).read_text(encoding="utf-8"))
        digest = "sha256:" + listing_hash(listing)
    except (OSError, ValueError):
        listing = {}
    try:
        verify_source(src, version=bversion)
        links.append(
            Link("bento source", True, f"every file of {tag} matches its listing, which hashes to its tag")
        )
    except IntegrityError as exc:
        links.append(
            Link(
                "bento source",
                False,
                f"{tag}: {exc}",
                artifact=f"{tag}/src ({exc})",
                expected=f"listing hash {bversion.rsplit('-', 1)[-1]}...",
                actual=digest,
            )
        )
    try:
        manifest = Manifest.load(src)
    except (ManifestError, OSError) as exc:
        links.append(
            Link("bento manifest", False, f"{tag}: {exc}", artifact=f"{tag}/src/nb2prod_manifest.json")
        )
        return links, digest, None
    info = manifest.carried().get(version)
    if info is None:
        links.append(Link("bento manifest", False, f"{tag} does not describe version {version}"))
        return links, digest, manifest
    listed = dict((listing.get("artifacts") or {}).get(version) or {})
    recorded = dict(info.artifact_sha256)
    if listed and listed != recorded:
        rel, want, got = _first_difference(listed, recorded) or ("?", None, None)
        links.append(
            Link(
                "bento manifest",
                False,
                f"the manifest's sha256 of {rel} differs from the Bento's listing",
                artifact=f"{tag}/src/nb2prod_manifest.json: models.{version}.artifact_sha256[{rel}]",
                expected=want,
                actual=got,
            )
        )
    model_tag = info.bento_model_tag
    if model_tag:
        mname, mversion = model_tag.split(":", 1)
        folder = settings.bentoml_home / MODELS / mname / mversion / MODEL_SUBDIR
        if not folder.is_dir():
            links.append(
                Link(
                    "bento model files",
                    False,
                    f"the BentoML model {model_tag} is not in the store",
                    artifact=str(folder),
                )
            )
        else:
            diff = _first_difference(recorded, sha256_tree(folder))
            if diff is None:
                links.append(
                    Link(
                        "bento model files",
                        True,
                        f"{len(recorded)} files of {model_tag} match the manifest's sha256",
                    )
                )
            else:
                rel, want, got = diff
                links.append(
                    Link(
                        "bento model files",
                        False,
                        f"model file {rel} of {model_tag} differs from its sha256"
                        + (" (missing)" if got is None else ""),
                        artifact=f"{folder / rel}",
                        expected=want,
                        actual=got,
                    )
                )
    diff = _first_difference(capture, recorded)
    if not capture:
        links.append(
            Link("capture record", None, f"the registered version carries no {names.TAG_ARTIFACT_SHA256}")
        )
    elif diff is None:
        links.append(Link("capture record", True, "the Bento's sha256 of every model file is the capture's"))
    else:
        rel, want, got = diff
        links.append(
            Link(
                "capture record",
                False,
                f"the sha256 of {rel} in the Bento differs from the capture's ({names.TAG_ARTIFACT_SHA256})",
                artifact=f"model version tag {names.TAG_ARTIFACT_SHA256}[{rel}] / {tag} manifest",
                expected=want,
                actual=got,
            )
        )
    return links, digest, manifest


# ----------------------------------------------------------------------------- the run


def _agree(name: str, what: str, values: dict[str, str | None]) -> Link:
    """One link: every known value of ``what`` (by where it was read) is the same."""
    known = {k: v for k, v in values.items() if v}
    if not known:
        return Link(name, None, f"no {what} recorded")
    distinct = sorted(set(known.values()))
    if len(distinct) == 1:
        return Link(name, True, f"{what} {distinct[0]} in {', '.join(known)}")
    first = next(iter(known))
    odd = next(k for k, v in known.items() if v != known[first])
    return Link(
        name,
        False,
        f"{what} differs: {first} has {known[first]}, {odd} has {known[odd]}",
        artifact=odd,
        expected=known[first],
        actual=known[odd],
    )


def _check_run(
    client: MlflowClient,
    name: str,
    mv: Any,
    manifest: Manifest | None,
    record: dict[str, Any],
) -> tuple[list[Link], dict[str, Any]]:
    from nb2prod.capture.environment import EnvironmentSnapshot
    from nb2prod.tracking import client as tracking

    links: list[Link] = []
    vtags = dict(mv.tags)
    run_id = vtags.get(names.TAG_RUN_ID) or mv.run_id
    run = client.get_run(run_id)
    rtags = dict(run.data.tags)
    # the manifest's provenance is its primary version's; another carried version has its run in ``models``
    primary = manifest is not None and manifest.model_version == str(mv.version)
    prov = manifest.provenance if manifest is not None and primary else None
    carried = manifest.carried().get(str(mv.version)) if manifest is not None else None
    links.append(
        _agree(
            "provenance: run",
            "run id",
            {
                "the registered version": run_id,
                "the Bento manifest": prov.run_id if prov else carried.run_id if carried else None,
            },
        )
    )
    for tag, label, attr in (
        (names.TAG_GIT_COMMIT, "git commit", "git_commit"),
        (names.TAG_NOTEBOOK_DIGEST, "code-cell digest", "notebook_digest"),
        (names.TAG_ENV_DIGEST, "environment digest", "env_digest"),
    ):
        links.append(
            _agree(
                f"provenance: {label}",
                label,
                {
                    f"run tag {tag}": rtags.get(tag),
                    f"model version tag {tag}": vtags.get(tag),
                    "the Bento manifest": getattr(prov, attr) if prov else None,
                },
            )
        )
    env = tracking.load_json_artifact(client, run_id, names.ENVIRONMENT_JSON)
    if not env:
        links.append(Link("environment", None, f"the run has no {names.ENVIRONMENT_JSON}"))
    else:
        try:
            got = EnvironmentSnapshot.from_dict(env).digest
        except Exception as exc:  # a record that no longer parses is broken too
            got = f"unreadable ({type(exc).__name__})"
        want = rtags.get(names.TAG_ENV_DIGEST)
        links.append(
            Link("environment", True, f"{names.ENVIRONMENT_JSON} digests to {got}, the run's tag")
            if got == want
            else Link(
                "environment",
                False,
                f"{names.ENVIRONMENT_JSON} of run {run_id} does not digest to the run's {names.TAG_ENV_DIGEST}",
                artifact=f"runs:/{run_id}/{names.ENVIRONMENT_JSON}",
                expected=want,
                actual=got,
            )
        )
    data: dict[str, str] = {}
    recorded = dict(record.get("data_digests") or {})
    # the run's other tracked datasets (a test set, a reference) are part of what made the model too
    for dataset, digest in names.data_digests(rtags).items():
        recorded.setdefault(f"{names.DATASET_KEY_PREFIX}{dataset}", digest)
    for key, digest in sorted(recorded.items()):
        dataset = key.split(":", 1)[1] if key.startswith(names.DATASET_KEY_PREFIX) else key
        data[dataset] = digest
        ds_record = tracking.load_json_artifact(client, run_id, names.dataset_record(dataset)) or {}
        links.append(
            _agree(
                f"data digest of '{dataset}'",
                "digest",
                {
                    f"model record models/{name}.json": (record.get("data_digests") or {}).get(key),
                    "the Bento manifest": (prov.data_digests.get(key) if prov else None),
                    f"model version tag {names.data_digest_tag(key.replace(':', '.'))}": vtags.get(
                        names.data_digest_tag(key.replace(":", "."))
                    ),
                    f"run tag {names.data_digest_tag(dataset)}": rtags.get(names.data_digest_tag(dataset)),
                    f"dataset record {names.dataset_record(dataset)}": ds_record.get("digest"),
                },
            )
        )
    for ds_record, frame, matches in tracking.load_holdouts(client, run_id):
        dataset = str(ds_record.get("name"))
        if matches:
            links.append(
                Link(
                    f"data rows of '{dataset}'", True, f"the stored rows digest to {ds_record.get('digest')}"
                )
            )
        else:
            from nb2prod.capture.hashing import digest_object

            links.append(
                Link(
                    f"data rows of '{dataset}'",
                    False,
                    f"the stored rows of '{dataset}' do not digest to their record",
                    artifact=f"runs:/{run_id}/{names.dataset_rows(dataset)}",
                    expected=ds_record.get("digest"),
                    actual=digest_object(frame),
                )
            )
    info = {
        "run_id": run_id,
        "experiment_id": run.info.experiment_id,
        "notebook": rtags.get(names.TAG_NOTEBOOK) or vtags.get(names.TAG_NOTEBOOK),
        "git_commit": rtags.get(names.TAG_GIT_COMMIT),
        "notebook_digest": rtags.get(names.TAG_NOTEBOOK_DIGEST),
        "env_digest": rtags.get(names.TAG_ENV_DIGEST),
        "data_digests": data,
        "kind": rtags.get(names.TAG_KIND),
    }
    return links, info


def _capture_hashes(
    client: MlflowClient, run_id: str, vtags: dict[str, str], record: dict[str, Any], what: str
) -> tuple[dict[str, str], Link | None]:
    """The capture's sha256 of every model file, and a broken link when its record does not hold."""
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking.artifacts import hashes_digest, recorded_hashes

    try:
        return recorded_hashes(client, run_id, vtags, record, what), None
    except ModelIntegrityError as exc:
        model_id = vtags.get(names.TAG_MODEL_ID) or record.get("model_id") or "?"
        stored = tracking.load_json_artifact(client, run_id, names.artifact_hashes(model_id))
        return {}, Link(
            "capture record",
            False,
            exc.message,
            artifact=f"model version tag {names.TAG_ARTIFACT_SHA256} / runs:/{run_id}/{names.artifact_hashes(model_id)}",
            expected=vtags.get(names.TAG_ARTIFACT_SHA256),
            actual=hashes_digest(stored) if isinstance(stored, dict) else None,
        )


def _check_mlflow_files(client: MlflowClient, settings: Settings, name: str, mv: Any) -> Link:
    from nb2prod.tracking.artifacts import fetch_verified

    with tempfile.TemporaryDirectory(prefix="nb2prod-trace-") as tmp:
        try:
            verified = fetch_verified(client, settings.tracking_uri, name, mv, Path(tmp))
        except ModelIntegrityError as exc:
            return Link(
                "mlflow model files",
                False,
                exc.message,
                artifact=f"the logged model of {name}/{mv.version} ({exc.message})",
            )
        return Link(
            "mlflow model files",
            True,
            f"{len(verified.recorded)} files of the logged model match the capture's sha256",
        )


# ----------------------------------------------------------------------------- the chain


def trace(name: str, request_id: str, *, settings: Settings | None = None) -> Trace:
    """The chain of the row logged under ``request_id`` for model ``name``, every hash checked.

    Raises:
        LifecycleError: no row with that request id in the model's store, or no such model.
    """
    from mlflow.exceptions import MlflowException

    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import registry

    settings = settings or load_settings()
    location = store_location(settings, name)
    rows = _logged_rows(location, request_id)
    answered = [r for r in rows if r[1] != SHADOW]
    if not answered:
        raise LifecycleError(
            f"no prediction with request id {request_id!r} in the store of {name} ({redact_uri(location)})",
            hint="request ids are in /predict answers (request_id) and batch outputs (<batch id>-<row>)",
        )
    ts, monitor, version, features, prediction = answered[0]
    version = str(version)
    row = {
        "ts": float(ts),
        "at": datetime.fromtimestamp(float(ts), UTC).isoformat(timespec="seconds"),
        "source": BATCH if monitor == BATCH else "online",
        "monitor": monitor,
        "model_version": version,
        "features": json.loads(features),
        "prediction": json.loads(prediction),
    }
    shadow = [{"model_version": str(r[2]), "prediction": json.loads(r[4])} for r in rows if r[1] == SHADOW]
    client = mlflow_client(settings)
    try:
        mv = client.get_model_version(name, version)
        events = registry.alias_history(client, name)
    except MlflowException:
        raise LifecycleError(
            f"the row {request_id!r} was answered by {name}/{version}, which is not registered here",
            hint="trace it in the project whose registry served it (MLFLOW_TRACKING_URI)",
        ) from None
    try:
        events = sorted([*events, *http_switches(location, timespec="microseconds")], key=event_time)
    except Exception:  # the store's switches are extra detail: the registry's history stands alone
        events = sorted(events, key=event_time)
    aliases, then = _state_at(events, float(ts))
    if row["source"] == BATCH:
        route = BATCH
    elif version == then["active"]:
        route = "champion"
    elif version == then["canary"]:
        route = "canary"
    elif then["active"] and _fallbacks_near(location, str(then["active"]), float(ts)):
        route = "fallback"
    else:
        route = "unknown"
    vtags = dict(mv.tags)
    run_id = str(vtags.get(names.TAG_RUN_ID) or mv.run_id)
    record = tracking.load_json_artifact(client, run_id, names.model_record(name)) or {}
    links: list[Link] = []
    capture, broken_capture = _capture_hashes(client, run_id, vtags, record, f"{name}/{version}")
    found = _bento_carrying(settings, name, version, float(ts))
    tag = digest = None
    manifest = None
    if found is None:
        links.append(Link("bento", None, f"no Bento of {name} in this project carries version {version}"))
    else:
        tag, src = found
        bento_links, digest, manifest = _check_bento(settings, tag, src, version, capture)
        links += bento_links
    if broken_capture is not None:
        links = [link for link in links if link.name != "capture record"] + [broken_capture]
    links.append(_check_mlflow_files(client, settings, name, mv))
    run_links, run = _check_run(client, name, mv, manifest, record)
    links += run_links
    return Trace(
        name=name,
        request_id=request_id,
        row=row,
        shadow=shadow,
        route=route,
        active_then=then,
        bento=tag,
        bento_digest=digest,
        registered={
            "version": version,
            "run_id": run_id,
            "model_id": vtags.get(names.TAG_MODEL_ID),
            "source": mv.source,
            "created": mv.creation_timestamp,
        },
        aliases=aliases,
        history=[e for e in events if event_time(e) <= float(ts)],
        run=run,
        links=links,
    )
