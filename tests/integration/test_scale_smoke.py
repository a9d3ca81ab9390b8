"""``bench/scale.py`` at a smoke size on the cluster under test: it completes and its invariants hold (every
queued run showed its place in line, no Job while the limit was 0, the operator quiet again before the limit
opened, all drained without ever exceeding the limit, the finished history stayed finished)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.kube import Cluster
from support.operator import REPO

pytestmark = pytest.mark.integration

SMOKE = {"SCALE_RUNS": "200", "SCALE_SMALL_RUNS": "40", "SCALE_HISTORY": "300"}
EXPECTED_CHECKS = (
    "small: all 40 runs Pending with a position",
    "deep: all 200 runs Pending with a position",
    "deep: no Job while the limit was 0",
    "deep: the operator was quiet before the limit was raised",
    "deep: all 200 runs drained",
    "deep: every run Succeeded",
    "deep: unfinished Jobs never above 20",
    "history: all 300 runs Succeeded",
    "history: no Job for a history run",
    "operator tracebacks in its log: 0",
)


def test_scale_benchmark_smoke(cluster: Cluster) -> None:
    env = {
        **os.environ,
        **SMOKE,
        "USE_EXISTING_CLUSTER": "1",
        "KUBECONFIG": str(cluster.kubeconfig),
        "PYTHONUNBUFFERED": "1",
    }
    # bench/ goes last on sys.path (-P keeps the script's folder from going first), so that a module there can
    # never shadow one of the standard library's of the same name.
    launcher = (
        "import runpy, sys; sys.path.append(sys.argv[1]); sys.argv = sys.argv[2:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    script = str(REPO / "bench" / "scale.py")
    args = ["--pending-timeout", "60", "--drain-timeout", "120", "--settle", "0", "--quiet-timeout", "60"]
    result = subprocess.run(
        [sys.executable, "-P", "-c", launcher, str(REPO / "bench"), script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    output = f"stdout:\n{result.stdout}\nstderr (last 4000):\n{result.stderr[-4000:]}"
    checks = [line.removeprefix("check: ") for line in result.stdout.splitlines() if line.startswith("check: ")]
    failed = [c for c in checks if not c.endswith(": ok")]
    assert not failed, output
    for expected in EXPECTED_CHECKS:
        assert any(c.startswith(expected) for c in checks), f"missing check {expected!r}\n{output}"
    assert result.returncode == 0, output
    assert "last create -> all Pending with a position" in result.stdout
    assert "operator RSS after (quiet)" in result.stdout
