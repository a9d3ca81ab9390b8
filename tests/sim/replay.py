"""Replay one scenario printed by a failing simulation test, with a trace of what happened.

.venv/bin/python tests/sim/replay.py '<scenario JSON>'      (or a file holding it)
SIM_ENGINE=legacy ... runs it against the former Reconciler.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.api import FLOWRUNS
from sim.harness import Harness
from sim.scenario import Scenario


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    text = Path(argv[1]).read_text() if Path(argv[1]).is_file() else argv[1]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    harness = Harness(Scenario.from_json(text))
    result = harness.run()
    api = harness.api
    print(f"engine={harness.variant} virtual time={result.virtual_seconds:.1f}s calls={result.calls}")
    for record in api.jobs:
        print(
            f"job {record.key[1]} run={record.run} task={record.task} attempt={record.attempt} "
            f"created={record.created:.3f} pod={record.pod.state} ended={record.pod.ended_at} "
            f"outcome={record.outcome} deleted_unfinished={record.deleted_unfinished} gone={record.gone}"
        )
    for (namespace, name), run in sorted(api.objects[FLOWRUNS].items()):
        uid = run["metadata"]["uid"]
        writes = [(round(w.at, 3), w.run_phase, w.task_phases) for w in api.writes.get(uid, [])]
        print(f"run {namespace}/{name} status={run.get('status', {}).get('phase')} writes={writes}")
    for at, uid, kind, reason, message in api.events:
        print(f"event t={at:.3f} {uid} {kind} {reason}: {message}")
    print("violations:" if result.violations else "no violations")
    for violation in result.violations:
        print("  " + violation)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
