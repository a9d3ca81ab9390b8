"""Kopf wiring: the engine's startup and cleanup, its watch streams and the liveness probe (see handlers.operator)."""
