"""Everything nb2prod keeps in MLflow.

- :mod:`nb2prod.tracking.names`: every tag name and artifact path (the contract vocabulary);
- :mod:`nb2prod.tracking.client`: the MLflow client, store errors, JSON artifacts, holdouts;
- :mod:`nb2prod.tracking.artifacts`: sha256 of a model tree and the one verified-model fetch;
- :mod:`nb2prod.tracking.registry`: registration, aliases and their history;
- :mod:`nb2prod.tracking.runstore`: the runner's own run records (SQLite fast path or MLflow).

Importing this package imports nothing heavy.
"""
