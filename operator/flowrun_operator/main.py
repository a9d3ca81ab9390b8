"""`flowrun-operator`: run the operator against the cluster in $KUBECONFIG (or in-cluster credentials)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import kopf

import flowrun_operator.handlers.operator  # noqa: F401  (registers the handlers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowrun-operator", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="namespace to watch (repeatable); default: $WATCH_NAMESPACES (comma-separated) or all namespaces",
    )
    parser.add_argument(
        "--liveness", default=os.environ.get("LIVENESS_ENDPOINT"), help="e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    namespaces = args.namespace or [n for n in os.environ.get("WATCH_NAMESPACES", "").split(",") if n.strip()]
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
            memo=kopf.Memo(namespaces=namespaces),
        )
    )


if __name__ == "__main__":
    main()
