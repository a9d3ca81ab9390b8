"""Certificates and keys for the embedded control plane.

Everything is generated fresh for each start: a self-signed CA, the API server's serving certificate,
client certificates (admin in ``system:masters``, the controller manager, the scheduler, kwok) and the RSA key
pair that signs and verifies service-account tokens.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClientIdentity", "Pki", "first_service_ip", "generate_pki"]

_VALIDITY = dt.timedelta(days=365)
_CLOCK_SKEW = dt.timedelta(minutes=5)

_Key: TypeAlias = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: common name (user) and organizations (groups)."""

    common_name: str
    organizations: tuple[str, ...] = ()


#: Client certificates the launcher issues, by file stem.
CLIENTS: dict[str, ClientIdentity] = {
    "admin": ClientIdentity("flowrun-admin", ("system:masters",)),
    "kube-controller-manager": ClientIdentity("system:kube-controller-manager"),
    "kube-scheduler": ClientIdentity("system:kube-scheduler"),
    "kwok": ClientIdentity("kwok-controller", ("system:masters",)),
    # The API server's identity towards aggregated API servers (front proxy, request-header auth).
    "front-proxy-client": ClientIdentity("front-proxy-client"),
}


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PEM files (all under one directory)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.directory / f"{name}.key"


def first_service_ip(service_cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The ClusterIP the API server gives the ``kubernetes`` Service: the first host of the range."""
    network = ipaddress.ip_network(service_cidr, strict=False)
    return network.network_address + 1


def _new_key() -> _Key:
    # ECDSA P-256: generated in microseconds, accepted by every component for TLS and client auth.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _write_key(path: Path, key: _Key | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: _Key,
    subject: x509.Name,
    usages: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, _Key]:
    key = _new_key()
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def apiserver_sans(service_cidr: str) -> list[x509.GeneralName]:
    """Subject alternative names of the API server's serving certificate."""
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    names.append(x509.IPAddress(first_service_ip(service_cidr)))
    return names


def generate_pki(directory: Path, service_cidr: str) -> Pki:
    """Write a CA, the API server's serving certificate, the client certificates and the service-account
    key pair into ``directory`` (created if needed), replacing any previous files."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)

    ca_key = _new_key()
    ca_name = _name("flowrun-devcluster-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    cert, key = _leaf(
        ca_cert,
        ca_key,
        _name("kube-apiserver"),
        [ExtendedKeyUsageOID.SERVER_AUTH],
        apiserver_sans(service_cidr),
    )
    _write_key(pki.apiserver_key, key)
    _write_cert(pki.apiserver_cert, cert)

    for stem, identity in CLIENTS.items():
        cert, key = _leaf(
            ca_cert,
            ca_key,
            _name(identity.common_name, identity.organizations),
            [ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        _write_key(pki.client_key(stem), key)
        _write_cert(pki.client_cert(stem), cert)

    # Service-account tokens: an RSA key pair (RS256 is what every token consumer expects).
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki
