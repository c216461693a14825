"""The one redaction of store URLs (nb2prod.serving.redact), shared by the service and nb2prod."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql+psycopg://user:secretpw@127.0.0.1/db", "postgresql+psycopg://user:***@127.0.0.1/db"),
        ("postgresql://user:p@ss:w/rd@db.example:5432/x", "postgresql://user:***@db.example:5432/x"),
        (
            "postgresql://h/db?user=u&password=secretpw&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        ("https://secretpw@mlflow.example/", "https://***@mlflow.example/"),
        ("postgresql://user@h/db", "postgresql://user@h/db"),
        ("sqlite:////tmp/a@b/predictions.db", "sqlite:////tmp/a@b/predictions.db"),
        ("/srv/project/.nb2prod/serving/m/predictions.db", "/srv/project/.nb2prod/serving/m/predictions.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_passwords_are_hidden_and_nothing_else_changes(uri: str, shown: str) -> None:
    from nb2prod.serving.redact import redact_uri

    assert redact_uri(uri) == shown
    assert "secretpw" not in redact_uri(uri)


def test_urls_inside_messages_and_the_tracking_client_use_the_same_function() -> None:
    from nb2prod.serving.redact import redact_text, redact_uri
    from nb2prod.tracking import client

    assert client.redact_uri is redact_uri
    text = "connection to postgresql+psycopg://user:secretpw@127.0.0.1/db failed; retry"
    assert redact_text(text) == "connection to postgresql+psycopg://user:***@127.0.0.1/db failed; retry"
