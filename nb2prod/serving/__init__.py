"""The runtime inside an exported service: input guard, model loading with integrity check,
the ``bentoml.monitor`` backend (prediction store), live drift and metrics.

``nb2prod export`` copies this package into the Bento as ``_nb2prod_serving``, so the
service does not need nb2prod installed; its modules import nothing from nb2prod.
"""
