"""The runner <-> kernel protocol: environment variables ``nb2prod run`` sets for the kernel.

The runner (:mod:`nb2prod.execute`) opens the MLflow run itself and hands its id to
the notebook's kernel, where the capture session (:mod:`nb2prod.session`) attaches to
it instead of opening a second run. Both sides read the names from here.
"""

from __future__ import annotations

RUN_ID = "NB2PROD_RUN_ID"
"""The run the kernel's ``%nb2prod start`` attaches to."""
DEFER_REGISTRATION = "NB2PROD_DEFER_REGISTRATION"
"""``1``: ``%nb2prod model`` records a registration candidate; the runner registers on success."""
STRICT = "NB2PROD_STRICT"
"""``1``: a tracking-store failure is an error in the cell instead of a warning."""
NOTEBOOK = "NB2PROD_NOTEBOOK"
"""The path of the notebook the kernel runs (a kernel cannot know it otherwise)."""
HOME = "NB2PROD_HOME"
"""The project home (see :mod:`nb2prod.config`)."""
EXPERIMENT = "NB2PROD_EXPERIMENT"
"""The experiment the runner opened the run in."""

RUNNER_VARIABLES = (RUN_ID, DEFER_REGISTRATION, STRICT, NOTEBOOK, HOME, EXPERIMENT)
"""Every variable the runner sets; a kernel started for anything else must not inherit them."""
