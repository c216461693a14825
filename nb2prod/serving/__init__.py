"""The runtime inside an exported service: the typed manifest (``manifest``), integrity and
model loading (``integrity``, ``loading``), routing, fallback and canary (``runtime``), the
input guard and row model (``guard``, ``schema``), the ``bentoml.monitor`` backend and the
prediction store (``monitor``, ``store``, ``sketch``), live drift (``drift``, the one PSI)
and metrics.

``nb2prod export`` copies this package into the Bento as ``_nb2prod_serving``, so the
service does not need nb2prod installed; its modules import nothing from nb2prod
(tests/test_layering.py checks it).
"""
