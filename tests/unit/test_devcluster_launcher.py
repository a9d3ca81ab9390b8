"""The embedded control plane's launcher without a real cluster: certificates, KWOK configuration, process
bookkeeping and the errors it raises (with stand-in binaries)."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from flowrun_operator.devcluster import COMPONENTS, DevCluster, DevClusterError, certs, launcher, processes
from flowrun_operator.devcluster.stages import (
    DURATION_ANNOTATION,
    EXIT_CODE_ANNOTATION,
    kwok_config,
    load_stages,
    node_manifest,
)
from support.kube import go_duration, pod_template, unique_name, wait_for


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_has_the_expected_subjects_and_sans(tmp_path: Path) -> None:
    pki = certs.generate_pki(tmp_path / "pki", "10.0.0.0/24")

    ca = _cert(pki.ca_cert)
    serving = _cert(pki.apiserver_cert)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"} <= set(
        sans.get_values_for_type(x509.DNSName)
    )
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1")} <= set(
        sans.get_values_for_type(x509.IPAddress)
    )
    serving.verify_directly_issued_by(ca)

    admin = _cert(pki.client_cert("admin"))
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    for name, cn in [
        ("kube-controller-manager", "system:kube-controller-manager"),
        ("kube-scheduler", "system:kube-scheduler"),
    ]:
        cert = _cert(pki.client_cert(name))
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        cert.verify_directly_issued_by(ca)
    assert b"BEGIN PUBLIC KEY" in pki.sa_pub.read_bytes()
    assert stat.S_IMODE(pki.sa_key.stat().st_mode) == 0o600


def test_first_service_ip() -> None:
    assert str(certs.first_service_ip("10.0.0.0/24")) == "10.0.0.1"


def test_kwok_config_has_options_and_stages() -> None:
    docs = list(yaml.safe_load_all(kwok_config()))
    assert docs[0]["kind"] == "KwokConfiguration"
    stages = {d["metadata"]["name"]: d for d in docs[1:]}
    assert set(stages) == {"node-initialize", "pod-ready", "pod-finish", "pod-delete"}
    assert all(d["kind"] == "Stage" for d in docs[1:])
    finish = stages["pod-finish"]
    assert DURATION_ANNOTATION in finish["spec"]["delay"]["durationFrom"]["jq"]["expression"]
    assert EXIT_CODE_ANNOTATION in finish["spec"]["next"]["statusTemplate"]
    assert stages["pod-delete"]["spec"]["next"]["delete"] is True
    assert len(load_stages()) == len(docs) - 1


def test_node_manifest_is_managed_by_kwok_with_large_capacity() -> None:
    node = node_manifest()
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["metadata"]["labels"]["type"] == "kwok"
    assert node["status"]["capacity"] | {} == node["status"]["allocatable"]
    assert node["status"]["capacity"]["pods"] == "1000"


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = launcher._free_ports(5)
    assert len(set(ports)) == 5
    assert all(launcher._port_free(p) for p in ports)


def test_pod_template_contract() -> None:
    template = pod_template(duration=2, exit_code=3)
    assert template["metadata"]["annotations"] == {DURATION_ANNOTATION: "2s", EXIT_CODE_ANNOTATION: "3"}
    (container,) = template["spec"]["containers"]
    assert container["image"] == "busybox:1.36"
    assert container["command"] == ["sh", "-c", "sleep 2; exit 3"]
    assert template["spec"]["restartPolicy"] == "Never"
    assert pod_template(0.5)["spec"]["containers"][0]["command"][-1] == "sleep 0.5; exit 0"
    assert go_duration(0.25) == "250ms"
    assert go_duration(0) == "0s"
    with pytest.raises(ValueError):
        pod_template(exit_code=256)


def test_unique_name_is_a_dns_label() -> None:
    name = unique_name("t-test_something[param-1]" + "x" * 80, max_length=50)
    assert len(name) <= 50
    assert name.replace("-", "").isalnum() and name == name.lower()
    assert not name.startswith("-") and "--" not in name


def test_wait_for_times_out_with_message_and_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the answer; last value: 0"):
        wait_for(lambda: 0, timeout=0.2, interval=0.05, message="the answer")
    assert wait_for(lambda: 42, timeout=1) == 42


# --------------------------------------------------------------------------- stand-in binaries


def _fake_bin(tmp_path: Path, scripts: dict[str, str]) -> Path:
    """A bin dir where each component is a shell script (default: sleep forever)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in COMPONENTS:
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + scripts.get(name, "exec sleep 600\n"))
        path.chmod(0o755)
    return bin_dir


def test_missing_binary_says_to_run_make_tools(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "state", bin_dir=tmp_path / "nowhere")
    with pytest.raises(DevClusterError, match="make tools") as info:
        cluster.start()
    assert info.value.component == "etcd"


def test_taken_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cluster = DevCluster(tmp_path / "state", bin_dir=_fake_bin(tmp_path, {}), apiserver_port=port)
        with pytest.raises(DevClusterError, match=rf"kube-apiserver: port 127.0.0.1:{port} is already taken"):
            cluster.start()


def test_component_exiting_is_reported_with_its_log(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, {"etcd": "echo 'etcd: simulated failure' >&2\nexit 3\n"})
    cluster = DevCluster(tmp_path / "state", bin_dir=bin_dir, timeout=10)
    with pytest.raises(DevClusterError) as info:
        cluster.start()
    error = info.value
    assert error.component == "etcd"
    assert error.log_path == cluster.log_path("etcd")
    assert "exited with code 3" in str(error)
    assert "simulated failure" in str(error)
    assert str(cluster.log_path("etcd")) in str(error)


def test_component_never_ready_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "state", bin_dir=_fake_bin(tmp_path, {}), timeout=1)
    started = time.monotonic()
    with pytest.raises(DevClusterError, match=r"etcd did not become ready \(GET /health\)"):
        cluster.start()
    assert time.monotonic() - started < 20
    assert not any(s.running for s in cluster.status())
    assert not list(cluster.pid_dir.glob("*.pid"))


def test_stale_processes_of_the_state_dir_are_cleaned(tmp_path: Path) -> None:
    state = (tmp_path / "state").absolute()
    (state / "pids").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_etcd = bin_dir / "etcd"
    fake_etcd.symlink_to(sys.executable)
    stale = subprocess.Popen(
        [str(fake_etcd), "-c", "import time; time.sleep(600)", f"--data-dir={state}/etcd"],
        start_new_session=True,
    )
    try:
        # A pid file pointing at an unrelated process (here: this test) must not get it killed.
        (state / "pids" / "kube-apiserver.pid").write_text(f"{os.getpid()}\n")
        wait_for(lambda: processes.belongs_to(stale.pid, state, COMPONENTS), timeout=10, message="fake etcd up")
        cluster = DevCluster(state, bin_dir=bin_dir)
        assert cluster.cleanup_stale() == [stale.pid]
        assert stale.wait(timeout=10) is not None
        assert not (state / "pids" / "kube-apiserver.pid").exists()
    finally:
        stale.kill()
        stale.wait()


def test_port_taken_between_pick_and_bind_is_retried(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    script = f"echo x >> {attempts}\necho 'listen tcp 127.0.0.1:1234: bind: address already in use' >&2\nexit 1\n"
    cluster = DevCluster(tmp_path / "state", bin_dir=_fake_bin(tmp_path, {"etcd": script}), timeout=10)
    with pytest.raises(DevClusterError, match="address already in use"):
        cluster.start()
    assert len(attempts.read_text().splitlines()) == 3
