"""Pure decision logic: admission order, run phases from Jobs, task DAG readiness. No I/O here."""
