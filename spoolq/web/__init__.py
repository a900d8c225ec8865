"""The web: status page, JSON API, ``/metrics`` and ``/healthz``.

``spoolq web`` serves it from a process of its own that reads the store (one on a
PostgreSQL store shows the whole fleet); ``spoolq run --http`` serves the same app from a
thread of the daemon. Modules: ``server`` (binding, uvicorn, the thread), ``app`` (wiring
and errors), ``api`` and ``logs`` (JSON), ``pages`` (HTML), ``metrics``, ``auth``,
``context`` (what routes share), ``models`` (the API's types). The web reads and changes
the queue only through the store's verbs and the shared serializer (``spoolq.serialize``).
"""
