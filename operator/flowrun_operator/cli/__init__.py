"""The inspection CLI, installed as ``kubectl-flowrun`` (so also usable as ``kubectl flowrun``)."""

from flowrun_operator.cli.app import app

__all__ = ["app"]
