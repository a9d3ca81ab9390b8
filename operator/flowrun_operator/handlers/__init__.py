"""Kopf handlers: they feed watch events into the reconciler and nothing else (see handlers.operator)."""
