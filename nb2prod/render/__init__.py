"""Every rendering of nb2prod's results, in one place: the core returns dataclasses, this turns them
into text for a terminal (:mod:`rich`), HTML for a notebook, and report pages.

- :mod:`nb2prod.render.terminal`: the command line's output;
- :mod:`nb2prod.render.notebook`: what the magics display (``text/plain`` and ``text/html``);
- :mod:`nb2prod.render.report`: the monitoring report as text and as an HTML page.
"""
