"""Kubernetes API helpers: idempotent writes, initial reads, Events; and the Jobs the operator creates."""
