"""Child process of an export: build the BentoML model and the Bento in a staging BentoML home.

``python -m nb2prod.export._build '<json args>'`` with ``BENTOML_HOME`` set to the staging
home. Run as its own process because BentoML fixes its home at import time.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main(raw: str) -> None:
    import bentoml

    args = json.loads(raw)
    for spec in args["models"]:
        files = Path(spec["files"])
        with bentoml.models.create(spec["tag"], labels={"nb2prod": "model"}) as model:
            for path in sorted(files.rglob("*")):
                if path.is_file():
                    dst = Path(model.path) / path.relative_to(files)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dst)
    ctx = Path(args["build_ctx"])
    bentoml.bentos.build_bentofile(
        str(ctx / "bentofile.yaml"),
        build_ctx=str(ctx),
        version=args["version"],
        labels=args.get("labels") or {},
    )


if __name__ == "__main__":
    main(sys.argv[1])
