"""Every rendering of nb2prod's results, in one place: the core returns dataclasses, this turns them
into text for a terminal (:mod:`rich`), HTML for a notebook, and report pages.

- :mod:`nb2prod.render.terminal`: the command line's output;
- :mod:`nb2prod.render.notebook`: the magics' text and the status panel's rows;
- :mod:`nb2prod.render.notebook_html`: the magics' HTML output (inline styles, saved with the notebook);
- :mod:`nb2prod.render.report_notebook`: the compact, scoped report ``%nb2prod monitor`` shows;
- :mod:`nb2prod.render.report`: the monitoring report as text and as an HTML page.
"""
