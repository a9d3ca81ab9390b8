"""Shared test helpers. ``tests/`` is on ``sys.path`` during a pytest run (it holds the root conftest), so
import them as ``from support.kube import ...``."""
