"""Export a registered model as an immutable Bento: ``bentos/NAME/`` source, then ``NAME:VERSION``.

The steps, each checked before the next side effect:

1. Resolve ``NAME``, ``NAME@alias`` or ``NAME/VERSION`` in the registry and the versions
   carried beside it; read what the capture recorded (:mod:`.manifest`).
2. Download the model files and check every sha256 against the capture's record
   (:func:`nb2prod.tracking.artifacts.fetch_verified`): a file changed since capture is
   refused here already.
3. Render the service source (manifest, ``service.py``, ``bentofile.yaml``, the vendored
   runtime, :mod:`.render`) and hash it with the model files: the Bento version is
   ``v<model version>-<content hash>``, so the same export twice gives the same tag.
4. Under the store's lock of the name: if the tag is in the store, stop (no-op). Else
   build the BentoML models and the Bento in staging and move them into the store
   (:mod:`.bento_store`, the one module that knows its layout).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import ExportError
from nb2prod.export import bento_store, render
from nb2prod.export import manifest as records
from nb2prod.export.bento_store import bento_name, find_bento, latest_bento
from nb2prod.serving.integrity import SOURCE_LIST
from nb2prod.serving.manifest import MANIFEST_FILE
from nb2prod.tracking import names

# names other modules imported from here before the split
__all__ = [
    "BENTOS_DIR",
    "MANIFEST_FILE",
    "ExportResult",
    "bento_name",
    "export_model",
    "find_bento",
    "latest_bento",
    "parse_ref",
]

BENTOS_DIR = "bentos"
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


def _check_canary(canary: tuple[str, float] | None, primary: str, companions: list[str]) -> None:
    """Refuse a canary on the exported version itself or outside (0, 100]; carry its version."""
    if canary is None:
        return
    if str(canary[0]) == primary:
        raise ExportError(
            f"the canary version {canary[0]} is the exported version itself",
            hint="give the challenger's version: --canary VERSION PERCENT",
        )
    if not 0 < canary[1] <= 100:
        raise ExportError(f"canary percent {canary[1]} is not in (0, 100]", hint="e.g. --canary 3 10")
    if str(canary[0]) not in companions:
        companions.append(str(canary[0]))


def export_model(
    ref: str,
    *,
    output: str | Path | None = None,
    settings: Settings | None = None,
    serving: dict[str, Any] | None = None,
    with_versions: Sequence[str] = (),
    canary: tuple[str, float] | None = None,
) -> ExportResult:
    """Export ``NAME[@alias|/version]`` as the Bento ``NAME:v<version>-<hash>`` (see module doc).

    The Bento also carries the version the exported one replaced as champion (the
    fallback and the rollback target), the ``challenger`` alias if set, and
    ``with_versions``; ``canary`` = (version, percent) starts it with a canary split.

    Raises:
        ExportError: unknown model, a companion version with other input columns, or the
            build failed.
        ModelIntegrityError: a model's files changed since capture (or carry no hashes).
    """
    from nb2prod.tracking import client as tracking

    started = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = settings or load_settings()
    name, alias, version = parse_ref(ref)
    options = records.serving_options(serving, canary)
    client = tracking.client(settings)
    mv = records.resolve(client, name, alias, version)
    primary = str(mv.version)
    companions, fallback = records.companions(client, name, primary, alias, list(with_versions))
    _check_canary(canary, primary, companions)

    with tempfile.TemporaryDirectory(prefix="nb2prod-export-") as tmp:
        tmpdir = Path(tmp)
        main = records.fetch(client, settings, name, mv, tmpdir)
        environment = tracking.load_json_artifact(client, main.verified.run_id, names.ENVIRONMENT_JSON) or {}
        found = records.contract(client, main)
        carried = [main]
        columns = [c.name for c in found.schema]
        for other in companions:
            fetched = records.fetch(
                client, settings, name, records.resolve(client, name, None, other), tmpdir
            )
            wants = fetched.feature_names
            if wants is not None and list(wants) != columns:
                if (
                    other == fallback
                    and other not in with_versions
                    and (canary is None or other != canary[0])
                ):
                    fallback = None  # the replaced version reads other columns: it cannot stand in
                    continue
                raise ExportError(
                    f"{name}/{other} reads other input columns than {name}/{primary}",
                    hint="one Bento serves one input contract: export the versions separately",
                )
            carried.append(fetched)

        manifest = records.build_manifest(
            alias=alias,
            main=main,
            carried=carried,
            fallback=fallback,
            found=found,
            environment=environment,
            serving=options,
        )
        pinned = render.pins(
            main.verified.record.get("requirements") or [], environment.get("distributions") or {}
        )
        python_version = str(environment.get("python_version") or "")
        model_tags = [c.model_tag for c in carried]
        files = render.render(manifest, model_tags, pinned, python_version)
        recorded = {c.version: c.verified.recorded for c in carried}
        content = render.content_hash(files, recorded)
        source_list = render.source_list(files, recorded)
        bname = manifest.bento_name
        bversion = f"v{primary}-{content[:12]}"
        source_dir = settings.home / BENTOS_DIR / name
        home = settings.bentoml_home
        built = False
        with bento_store.lock(home, bname):
            if find_bento(home, bname, bversion) is None:
                stamped = manifest.built(datetime.now(UTC).isoformat(timespec="seconds"), bversion)
                files[MANIFEST_FILE] = stamped.to_json()
                files[SOURCE_LIST] = source_list  # the stamps are not hashed: still the same list
                render.write_tree(source_dir, files)
                bento_store.build(
                    home,
                    source_dir,
                    bname,
                    bversion,
                    [(str(c.files), c.model_tag) for c in carried],
                    {names.TAG_CONTENT: content[:32]},
                )
                built = True
            else:
                # The same content was built before: restore its source if the folder drifted.
                stored = bento_store.stored_source(home, bname, bversion)
                current = source_dir / MANIFEST_FILE
                if not current.is_file() or current.read_text(encoding="utf-8") != stored.get(MANIFEST_FILE):
                    stored["bentofile.yaml"] = files["bentofile.yaml"]
                    render.write_tree(source_dir, stored)
                bento_store.set_latest(home, bname, bversion)
    tag = f"{bname}:{bversion}"
    archive = bento_store.export_archive(home, tag, Path(output)) if output else None
    return ExportResult(
        tag=tag,
        name=name,
        model_version=primary,
        alias=alias,
        source_dir=source_dir,
        bentoml_home=home,
        model_tag=main.model_tag,
        built=built,
        archive=archive,
        seconds=time.perf_counter() - started,
        versions=tuple(c.version for c in carried),
        fallback=manifest.fallback,
        canary=manifest.serving.canary.to_dict() if manifest.serving.canary else None,
    )
