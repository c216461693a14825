"""The container path and worker processes of the shared ``TUMOR`` capture's Bento.

No Docker engine runs here: nothing is containerized. What ``bentoml containerize``
would build from is checked instead (the Bento's generated Dockerfile and requirements
pin exactly what the capture recorded), and the Kubernetes manifest ``nb2prod export
--k8s`` writes is validated as a structure. ``nb2prod serve --workers 2`` runs for real.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from nb2prod.export import k8s
from nb2prod.export.serve import workers_option
from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import CapturedProject, free_port, serving

CAPTURE = TUMOR
MODEL = TUMOR_MODEL


def _bento_dir(exported: Any) -> Path:
    bname, version = exported.tag.split(":", 1)
    return Path(exported.bentoml_home) / "bentos" / bname / version


def _requirements(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"unpinned requirement {line!r}"
            pkg, ver = line.split("==", 1)
            assert out.get(pkg, ver) == ver, f"{pkg} pinned twice at different versions"
            out[pkg] = ver
    return out


def _base(pkg: str) -> str:
    return pkg.split("[", 1)[0].lower().replace("_", "-")


@pytest.mark.slow
def test_the_bento_to_containerize_pins_what_the_capture_pinned(
    captured_project: CapturedProject, exported: Any
) -> None:
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import names

    bento = _bento_dir(exported)
    manifest = json.loads((bento / "src" / "nb2prod_manifest.json").read_text())
    run_id = manifest["provenance"]["run_id"]
    mlflow = tracking.client(captured_project.settings)
    record = tracking.load_json_artifact(mlflow, run_id, names.model_record(MODEL)) or {}
    environment = tracking.load_json_artifact(mlflow, run_id, names.ENVIRONMENT_JSON) or {}
    captured = {_base(k): v for k, v in (environment.get("distributions") or {}).items()}
    assert record.get("requirements") and captured, "the capture recorded no requirements"

    built = _requirements((bento / "env" / "python" / "requirements.txt").read_text())
    bentofile = yaml.safe_load((bento / "src" / "bentofile.yaml").read_text())
    assert bentofile["python"]["lock_packages"] is False
    # the image installs exactly the bentofile's pins (BentoML only repeats its own pin)
    assert built == _requirements("\n".join(bentofile["python"]["packages"]))
    # every requirement the model capture recorded, at its version
    for line in record["requirements"]:
        pkg, ver = line.split("==", 1)
        assert built.get(_base(pkg)) == ver.strip(), line
    # every package in the image is pinned at the version of the captured environment
    for pkg, ver in built.items():
        assert captured.get(_base(pkg)) == ver, f"{pkg}=={ver} is not what the capture recorded"
    # the runtime reaches a PostgreSQL store from a container
    assert {"bentoml", "sqlalchemy", "psycopg[binary]"} <= set(built)

    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    python = ".".join(str(manifest["provenance"]["python_version"]).split(".")[:2])
    assert re.search(rf"^FROM python:{re.escape(python)}-slim\b", dockerfile, re.M), dockerfile[:400]
    assert "env/python/requirements.txt" in dockerfile
    assert "EXPOSE 3000" in dockerfile


def test_workers_option_quotes_the_service_name() -> None:
    assert workers_option("my.model:v1-abc", 3) == 'services."my.model".workers=3'


def test_k8s_manifest_refuses_what_is_not_a_bento_tag() -> None:
    with pytest.raises(ValueError, match="NAME:VERSION"):
        k8s.manifests("tumor")
    with pytest.raises(ValueError, match="replicas"):
        k8s.manifests("tumor:v1-abc", k8s.K8sOptions(replicas=0))
    assert k8s.dns_name("My_Model.v2") == "my-model-v2"


def _check_manifest(docs: list[dict[str, Any]], tag: str, replicas: int) -> None:
    kinds = {d["kind"]: d for d in docs}
    assert sorted(kinds) == ["Deployment", "Service"]
    deployment, service = kinds["Deployment"], kinds["Service"]
    assert deployment["apiVersion"] == "apps/v1" and service["apiVersion"] == "v1"
    spec = deployment["spec"]
    assert spec["replicas"] == replicas
    selector = spec["selector"]["matchLabels"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert selector and selector.items() <= pod_labels.items()
    assert service["spec"]["selector"] == selector
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == tag  # what `bentoml containerize TAG` tags the image
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 3000}
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 3000)
    for kind, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        assert container[kind]["httpGet"]["path"] == path
        assert container[kind]["httpGet"]["port"] in ("http", 3000)
    env = {e["name"]: e for e in container["env"]}
    for name in ("NB2PROD_PREDICTION_STORE", "NB2PROD_ADMIN_TOKEN", "MLFLOW_TRACKING_URI"):
        assert "value" not in env[name], f"{name} is inline"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] and ref["key"]
    assert not env["NB2PROD_PREDICTION_STORE"]["valueFrom"]["secretKeyRef"]["optional"]
    assert container["resources"]["requests"]["memory"]
    volumes = {v["name"] for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(env["NB2PROD_SPOOL_DIR"]["value"]) in volumes  # a writable spool


@pytest.mark.slow
def test_export_k8s_writes_a_deployment_and_service_of_the_built_bento(
    captured_project: CapturedProject, exported: Any, tmp_path: Path
) -> None:
    secret_value = "postgresql+psycopg://nb2prod:s3cret-pw@db/predictions"
    out = tmp_path / "k8s"
    env = captured_project.env(NB2PROD_PREDICTION_STORE=secret_value, NB2PROD_ADMIN_TOKEN="tok-s3cret")

    done = subprocess.run(
        [sys.executable, "-m", "nb2prod", "export", MODEL, "--k8s", str(out), "--replicas", "3"],
        cwd=captured_project.home,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    path = out / f"{MODEL}.yaml"
    assert str(path) in done.stdout
    text = path.read_text()
    assert "s3cret" not in text and "s3cret" not in done.stdout + done.stderr
    assert "&id0" not in text  # plain YAML, no anchors
    docs = list(yaml.safe_load_all(text))
    _check_manifest(docs, exported.tag, replicas=3)  # the export was a no-op: same tag


@pytest.mark.slow
def test_serve_with_two_workers_answers_from_two_processes(
    captured_project: CapturedProject, exported: Any
) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "nb2prod", "serve", MODEL, "--port", str(port), "--workers", "2"]
    log = captured_project.home / "serve-workers.log"
    with serving(argv, captured_project.env(), log, cwd=captured_project.home) as srv:
        row = dict(captured_project.data["expected"]["rows"][0])
        # /readyz is answered by whichever worker takes the connection: the other may still be
        # loading its model, and answers 503 (JSON, retryable) until it has.
        deadline = time.monotonic() + 60
        while True:
            status, body, _ = srv.post("/predict", json.dumps(row).encode())
            if status != 503 or time.monotonic() > deadline:
                break
            assert json.loads(body)["error"] == "unavailable", body[:500]
            time.sleep(0.2)
        assert status == 200, body[:500]
        pids: set[int] = set()
        # A fresh connection per request spreads them over the workers; the second may still
        # be loading when the first answers /readyz: bounded, 300 asks over ~30 s at most.
        for _ in range(300):
            with urllib.request.urlopen(srv.url + "/metadata", timeout=10) as resp:
                pids.add(int(json.loads(resp.read())["worker_pid"]))
            if len(pids) == 2:
                break
            time.sleep(0.1)
        assert len(pids) == 2, f"one worker answered 300 fresh connections: {pids}\n{srv.log_text()[-2000:]}"
        assert "2 workers" in srv.log_text()
