"""A Kubernetes manifest of a built Bento: one Deployment and one Service (``nb2prod export --k8s``).

The image is what ``bentoml containerize NAME:VERSION`` tags (``NAME:VERSION``; retag it
for a registry and pass that name as ``image``). Every setting that may carry a secret
(the prediction store URL with its password, the admin and feedback tokens, the MLflow
URI) comes from a Kubernetes Secret by reference: the manifest never holds a value of
one. The spool (rows kept on local disk while the store is down) is an ``emptyDir``. BentoML serves on port 3000: ``/readyz`` is the readiness probe (503 until the
model is loaded and checked), ``/livez`` the liveness probe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PORT = 3000
# The local spool of rows the store has not taken yet (a store outage): writable by the
# image's non-root user, kept across container restarts in the pod (an emptyDir).
SPOOL_DIR = "/var/lib/nb2prod/spool"
# (environment variable, key in the Secret, required): the service reads these at start.
SECRET_ENV: tuple[tuple[str, str, bool], ...] = (
    ("NB2PROD_PREDICTION_STORE", "prediction-store", True),
    ("NB2PROD_ADMIN_TOKEN", "admin-token", True),
    ("NB2PROD_FEEDBACK_TOKEN", "feedback-token", False),
    ("MLFLOW_TRACKING_URI", "mlflow-tracking-uri", False),
)


@dataclass(frozen=True)
class Resources:
    """Container requests and limits (Kubernetes quantities)."""

    cpu_request: str = "500m"
    memory_request: str = "512Mi"
    cpu_limit: str | None = None
    memory_limit: str = "1Gi"

    def to_dict(self) -> dict[str, dict[str, str]]:
        limits = {"memory": self.memory_limit}
        if self.cpu_limit:
            limits["cpu"] = self.cpu_limit
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request}, "limits": limits}


@dataclass(frozen=True)
class K8sOptions:
    """What the manifest can vary: replicas, the image (default: the Bento tag), Secret, resources."""

    replicas: int = 2
    image: str | None = None
    secret: str | None = None
    workers: int | None = None
    resources: Resources = field(default_factory=Resources)


def dns_name(name: str) -> str:
    """``name`` as a Kubernetes object name (DNS-1123 label: ``[a-z0-9-]``, at most 63)."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].rstrip("-")
    if not out:
        raise ValueError(f"{name!r} gives no usable Kubernetes name")
    return out


def secret_name(name: str) -> str:
    """The default Secret of model ``name``'s service."""
    return f"{dns_name(name)}-nb2prod"


def manifests(tag: str, options: K8sOptions | None = None) -> list[dict[str, Any]]:
    """The Deployment and Service of Bento ``tag`` (``NAME:VERSION``), as Kubernetes objects.

    Raises:
        ValueError: ``tag`` is not ``NAME:VERSION`` or ``replicas`` is below 1.
    """
    options = options or K8sOptions()
    bname, sep, version = tag.partition(":")
    if not sep or not bname or not version:
        raise ValueError(f"{tag!r} is not a Bento tag NAME:VERSION")
    if options.replicas < 1:
        raise ValueError(f"replicas {options.replicas} is below 1")
    name = dns_name(bname)
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "nb2prod-service"}
    labels = {
        **selector,
        "app.kubernetes.io/version": version[:63],
        "app.kubernetes.io/managed-by": "nb2prod",
    }
    secret = options.secret or secret_name(bname)
    env: list[dict[str, Any]] = [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": not required}}}
        for var, key, required in SECRET_ENV
    ]
    env.append({"name": "NB2PROD_SPOOL_DIR", "value": SPOOL_DIR})
    if options.workers:
        # not a secret: how many worker processes BentoML runs in each pod (quoted service name)
        env.append(
            {"name": "BENTOML_CONFIG_OPTIONS", "value": f'services."{bname}".workers={options.workers}'}
        )

    def probe(path: str, *, delay: int, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "initialDelaySeconds": delay,
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    container = {
        "name": "service",
        "image": options.image or tag,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": probe("/readyz", delay=5, period=5, failures=3),
        "livenessProbe": probe("/livez", delay=30, period=10, failures=3),
        "resources": options.resources.to_dict(),
        "volumeMounts": [{"name": "spool", "mountPath": SPOOL_DIR}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": {"nb2prod/bento": tag}},
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    # time for the prediction log to drain after SIGTERM
                    "terminationGracePeriodSeconds": 60,
                    "containers": [container],
                    "volumes": [{"name": "spool", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML text (``kubectl apply -f``)."""
    import yaml

    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


def write(directory: Path, tag: str, options: K8sOptions | None = None) -> Path:
    """Write ``DIRECTORY/NAME.yaml`` (:func:`manifests` of ``tag``); the path written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dns_name(tag.partition(':')[0])}.yaml"
    path.write_text(to_yaml(manifests(tag, options)), encoding="utf-8")
    return path
