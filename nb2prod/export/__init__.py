"""Export a registered model as a versioned BentoML service (``nb2prod export`` / ``serve``).

BentoML and MLflow are imported inside the functions: importing this package is cheap.
"""

from __future__ import annotations

from nb2prod.export.bento_store import latest_bento
from nb2prod.export.builder import ExportResult, export_model, parse_ref
from nb2prod.export.serve import serve_command

__all__ = ["ExportResult", "export_model", "latest_bento", "parse_ref", "serve_command"]
