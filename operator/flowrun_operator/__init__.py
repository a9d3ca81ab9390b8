"""flowrun-operator: FlowRun and ConcurrencyLimit custom resources, run by a Kopf operator."""

__version__ = "0.1.0"
