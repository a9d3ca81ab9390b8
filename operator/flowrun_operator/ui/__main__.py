"""``python -m flowrun_operator.ui``: the dashboard as the chart runs it (in-cluster credentials)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from flowrun_operator.client import ClientError, Connection
from flowrun_operator.ui.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowrun_operator.ui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG, else in-cluster)")
    parser.add_argument("--allow-writes", action="store_true", help="enable the Cancel and Retry buttons")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        connection = Connection(args.kubeconfig)
    except ClientError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    serve(
        connection,
        host=args.host,
        port=args.port,
        allow_writes=args.allow_writes,
        on_ready=lambda url: print(f"dashboard listening on {url}", flush=True),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
