"""BentoML's on-disk store, as nb2prod reads and writes it: the one module that knows its layout.

A BentoML home holds ``bentos/NAME/VERSION/`` (``bento.yaml``, ``src/``) and
``models/NAME/VERSION/``, each ``NAME/`` with a ``latest`` file naming its newest
version. nb2prod builds in a staging home beside the store, in a child process
(``python -m nb2prod.export._build``: BentoML reads ``BENTOML_HOME`` once per process),
then moves each built model and the Bento into the store with one ``rename``: an
export killed midway leaves staging debris (cleaned by the next export of that name),
never a half-built Bento under the final tag. A file lock per Bento name keeps two
exports of the same name from building at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from nb2prod.config import Settings
from nb2prod.exceptions import ExportError
from nb2prod.serving.integrity import IntegrityError, verify_source
from nb2prod.serving.manifest import MANIFEST_FILE
from nb2prod.serving.store import STORE_ENV

BENTOS = "bentos"
MODELS = "models"
LATEST = "latest"
BENTO_YAML = "bento.yaml"
SOURCE = "src"
LOCKS = ".nb2prod-locks"
STAGING = ".staging-"

__all__ = [
    "bento_name",
    "build",
    "export_archive",
    "find_bento",
    "latest_bento",
    "lock",
    "manifest_path",
    "set_latest",
    "stored_source",
    "verify_built_source",
]


def bento_name(name: str) -> str:
    """A registered model name as a BentoML name (lowercase, ``[a-z0-9_.-]``)."""
    out = re.sub(r"[^a-z0-9_.-]", "-", name.lower()).strip("-_.")
    if not out:
        raise ExportError(
            f"model name {name!r} gives no usable Bento name", hint="register it under a plainer name"
        )
    return out


def find_bento(home: Path, bname: str, version: str) -> Path | None:
    """The folder of Bento ``bname:version`` in the store at ``home``, if it is there."""
    path = home / BENTOS / bname / version
    return path if (path / BENTO_YAML).is_file() else None


def latest_bento(settings: Settings, name: str) -> str:
    """The tag of the newest Bento built for ``name`` (by creation).

    Raises:
        ExportError: no Bento of ``name`` in this project's store.
    """
    home = settings.bentoml_home
    bname = bento_name(name)
    latest = home / BENTOS / bname / LATEST
    if latest.is_file():
        version = latest.read_text(encoding="utf-8").strip()
        if find_bento(home, bname, version):
            return f"{bname}:{version}"
    raise ExportError(
        f"no Bento of {name!r} in {home}",
        hint=f"export it first: nb2prod export {name}",
    )


def manifest_path(home: Path, tag: str) -> Path:
    """Where the nb2prod manifest of Bento ``tag`` (``NAME:VERSION``) is in the store."""
    bname, version = tag.split(":", 1)
    return home / BENTOS / bname / version / SOURCE / MANIFEST_FILE


def stored_source(home: Path, bname: str, version: str) -> dict[str, str]:
    """The service source a built Bento carries, by relative path (no ``__pycache__``)."""
    src = home / BENTOS / bname / version / SOURCE
    return {
        p.relative_to(src).as_posix(): p.read_text(encoding="utf-8")
        for p in src.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def verify_built_source(home: Path, tag: str) -> None:
    """The source of Bento ``tag`` in the store is what was built under that tag.

    The same check the service makes at start (:func:`nb2prod.serving.integrity.verify_source`),
    from outside the service: run it before serving.

    Raises:
        ExportError: naming the file that is missing, changed or not built into the Bento.
    """
    bname, version = tag.split(":", 1)
    try:
        verify_source(home / BENTOS / bname / version / SOURCE, version=version)
    except IntegrityError as exc:
        raise ExportError(
            f"the Bento {tag} was changed after it was built: {exc}",
            hint=f"re-export it (nb2prod export {bname}) and serve the new tag",
        ) from None


@contextlib.contextmanager
def lock(home: Path, bname: str) -> Iterator[None]:
    """Hold the store's lock of Bento name ``bname`` (one export of a name at a time)."""
    path = home / LOCKS / f"{bname}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def set_latest(home: Path, bname: str, version: str) -> None:
    """Point ``bentos/NAME/latest`` at ``version``."""
    _atomic_text(home / BENTOS / bname / LATEST, version)


def _bentoml_env(home: Path) -> dict[str, str]:
    return dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True")


def _run_build(
    source: Path,
    staging_home: Path,
    models: Sequence[tuple[str, str]],
    version: str,
    labels: Mapping[str, str],
) -> None:
    args = {
        "build_ctx": str(source),
        "models": [{"files": files, "tag": tag} for files, tag in models],
        "version": version,
        "labels": dict(labels),
    }
    env = _bentoml_env(staging_home)
    env.pop("BENTOML_CONFIG", None)
    # the service's module reads the store location at import: a URL with a password in this
    # environment would be written into bento.yaml by the build
    env.pop(STORE_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "nb2prod.export._build", json.dumps(args)],
        env=env,
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
    _atomic_text(dst.parent / LATEST, version)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_staging(home: Path, bname: str) -> None:
    """Remove what killed exports of ``bname`` left in staging (their process is gone)."""
    prefix = f"{STAGING}{bname}-"
    for path in home.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def build(
    home: Path,
    source: Path,
    bname: str,
    version: str,
    models: Sequence[tuple[str, str]],
    labels: Mapping[str, str],
) -> None:
    """Build the BentoML models and the Bento ``bname:version`` of ``source`` into the store.

    ``models`` are (folder of files, BentoML model tag). Call it holding :func:`lock`.

    Raises:
        ExportError: BentoML failed to build (the store is left unchanged).
    """
    _clean_staging(home, bname)
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}{bname}-{os.getpid()}-", dir=home))
    try:
        _run_build(source, staging, models, version, labels)
        for _files, tag in models:
            _publish(staging, home, MODELS, bname, tag.split(":", 1)[1])
        _publish(staging, home, BENTOS, bname, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_archive(home: Path, tag: str, output: Path) -> Path:
    """Write Bento ``tag`` as the portable archive ``output`` (``NAME.bento``).

    Raises:
        ExportError: ``output`` does not end in ``.bento``, or BentoML failed to write it.
    """
    output = output.expanduser().resolve()
    if output.suffix != ".bento":
        raise ExportError(f"{output} does not end in .bento", hint="name the archive NAME.bento")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.part.bento")
    code = "import sys, bentoml; bentoml.export_bento(sys.argv[1], sys.argv[2])"
    proc = subprocess.run(
        [sys.executable, "-c", code, tag, str(tmp)],
        env=_bentoml_env(home),
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
