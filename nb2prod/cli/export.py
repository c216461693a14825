"""``nb2prod export`` and ``serve``: a registered model as a Bento, and the Bento as a service."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nb2prod.cli.options import echo_lines
from nb2prod.render import terminal


@click.command("export")
@click.argument("ref", metavar="NAME[@alias|/version]")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the Bento as a portable archive (FILE.bento).",
)
@click.option(
    "--with", "with_versions", multiple=True, metavar="VERSION", help="Also carry this version (repeat)."
)
@click.option(
    "--canary",
    nargs=2,
    type=(str, click.FloatRange(0, 100, min_open=True)),
    default=None,
    metavar="VERSION PERCENT",
    help="Start the service sending PERCENT of the rows to VERSION.",
)
@click.option(
    "--durable",
    is_flag=True,
    help="Make the Bento answer each prediction only after its log row is committed (default: after it is spooled).",
)
@click.option(
    "--k8s",
    "k8s_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Also write DIR/NAME.yaml: a Kubernetes Deployment + Service of the image "
    "`bentoml containerize` builds (settings from a Secret, probes /readyz and /livez).",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 100),
    default=2,
    show_default=True,
    help="Pods of the Deployment (with --k8s).",
)
@click.option(
    "--image",
    default=None,
    metavar="IMAGE",
    help="Image of the Deployment (with --k8s; default NAME:VERSION).",
)
def export_cmd(
    ref: str,
    output: Path | None,
    with_versions: tuple[str, ...],
    canary: tuple[str, float] | None,
    durable: bool,
    k8s_dir: Path | None,
    replicas: int,
    image: str | None,
) -> None:
    """Write bentos/NAME/ and build the immutable Bento NAME:<version> of a registered model.

    The Bento also carries the version the exported one replaced as champion (for rollback
    and fallback without a rebuild) and the challenger, if one is set.
    """
    from nb2prod.export import export_model

    result = export_model(
        ref,
        output=output,
        with_versions=with_versions,
        canary=canary,
        serving={"durable": True} if durable else None,
    )
    echo_lines(terminal.export_lines(result))
    if k8s_dir is not None:
        from nb2prod.export import k8s

        path = k8s.write(k8s_dir, result.tag, k8s.K8sOptions(replicas=replicas, image=image))
        click.echo(
            f"kubernetes manifest: {path} (secret {k8s.secret_name(result.name)}, image {image or result.tag})"
        )


@click.command("serve")
@click.argument("name")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Port to listen on."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--durable",
    is_flag=True,
    help="Answer each prediction only after its log row is committed (survives kill -9; costs throughput).",
)
@click.option(
    "--store",
    default=None,
    metavar="URL",
    help="Prediction store: a SQLite path or a SQLAlchemy URL such as postgresql+psycopg://... "
    "(default: NB2PROD_PREDICTION_STORE, else <home>/.nb2prod/serving/NAME/predictions.db).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="BentoML worker processes (default: 1). They share the prediction store and follow every switch.",
)
def serve_cmd(name: str, port: int, host: str, durable: bool, store: str | None, workers: int | None) -> None:
    """Run `bentoml serve` on the newest built Bento of NAME (Ctrl+C or SIGTERM stops it, draining the log)."""
    import os

    from nb2prod.config import load_settings
    from nb2prod.export import serve_command
    from nb2prod.export.bento_store import verify_built_source
    from nb2prod.export.builder import parse_ref
    from nb2prod.lifecycle.services import record_service
    from nb2prod.serving.redact import redact_uri

    settings = load_settings()
    cmd = serve_command(
        name, port=port, host=host, durable=durable, settings=settings, store=store, workers=workers
    )
    verify_built_source(settings.bentoml_home, cmd.tag)
    mode = (", durable" if durable else "") + (f", {workers} workers" if workers else "")
    click.echo(
        f"serving {cmd.tag} on http://{host}:{port} "
        f"(predictions logged to {redact_uri(cmd.prediction_store)}{mode})"
    )
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    # exec keeps this pid: the record names the service's own process
    record_service(
        settings,
        parse_ref(name)[0],
        url=f"http://{local}:{port}",
        pid=os.getpid(),
        tag=cmd.tag,
        workers=workers or _configured_workers(cmd.env, cmd.tag),
        store=cmd.prediction_store,
    )
    sys.stdout.flush()
    os.execvpe(cmd.argv[0], cmd.argv, cmd.env)


def _configured_workers(env: dict[str, str], tag: str) -> int | None:
    """The workers ``BENTOML_CONFIG_OPTIONS`` gives the service: BentoML's default, 1, when it says
    nothing; None when a BentoML configuration file may say otherwise."""
    import re

    service = re.escape(tag.split(":", 1)[0])
    found = re.findall(rf'services\."?{service}"?\.workers=(\d+)', env.get("BENTOML_CONFIG_OPTIONS", ""))
    if found:
        return int(found[-1])
    return None if env.get("BENTOML_CONFIG") else 1
