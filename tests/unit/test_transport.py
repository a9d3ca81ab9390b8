"""What `Transport` takes from the official client's Configuration (its calls are tested against the real API
server in tests/integration/test_kube_io.py)."""

from __future__ import annotations

import ssl

import kubernetes

from flowrun_operator.kube.transport import Transport, ssl_context


def configuration(host: str = "https://api.example:6443", **values: object) -> kubernetes.client.Configuration:
    config = kubernetes.client.Configuration(host=host)
    for name, value in values.items():
        setattr(config, name, value)
    return config


def test_a_bearer_token_is_sent_and_read_again_on_every_call() -> None:
    config = configuration()
    config.api_key = {"authorization": "Bearer first"}
    transport = Transport(config)
    assert transport._headers("application/json")["authorization"] == "Bearer first"
    config.api_key = {"authorization": "Bearer rotated"}  # what a refresh hook does when the token file changes
    headers = transport._headers(None)
    assert headers["authorization"] == "Bearer rotated" and "Content-Type" not in headers


def test_no_token_no_authorization_header() -> None:
    assert "authorization" not in Transport(configuration())._headers(None)


def test_tls_follows_the_configuration() -> None:
    verified = ssl_context(configuration())
    assert isinstance(verified, ssl.SSLContext)
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    unverified = ssl_context(configuration(verify_ssl=False))
    assert isinstance(unverified, ssl.SSLContext) and unverified.verify_mode == ssl.CERT_NONE
    assert ssl_context(configuration(host="http://127.0.0.1:8001")) is False
    assert Transport(configuration(host="https://api.example:6443/prefix/")).host == "https://api.example:6443/prefix"
