"""The inspection CLI, installed as ``kubectl-flowrun`` (so also usable as ``kubectl flowrun``)."""

from flowrun_operator.cli import schedules as schedules  # registers the FlowSchedule commands
from flowrun_operator.cli import ui as ui  # registers `kubectl flowrun ui`
from flowrun_operator.cli.app import app

__all__ = ["app"]
