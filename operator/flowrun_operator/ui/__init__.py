"""The read-only web dashboard: runs, a run's timeline, limits and their waiting lines (see docs/dashboard.md).

Served locally by ``kubectl flowrun ui`` or in the cluster by the chart (``python -m flowrun_operator.ui``).
"""

from flowrun_operator.ui.server import Dashboard, create_app, serve

__all__ = ["Dashboard", "create_app", "serve"]
