"""The local cluster's certificates: one CA per control plane, the apiserver's serving certificate, client
certificates (the user is the common name, its groups the organizations), and the service-account key."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    def write(self, directory: Path, stem: str, chain: bytes = b"") -> tuple[Path, Path]:
        """``{stem}.crt`` (followed by ``chain``) and ``{stem}.key`` in ``directory``."""
        return (write_file(directory / f"{stem}.crt", self.cert_pem + chain, 0o644),
                write_file(directory / f"{stem}.key", self.key_pem))


def _certificate(subject: x509.Name, issuer: x509.Name, key: PrivateKey, signer: PrivateKey,
                 validity: dt.timedelta, extensions: list[tuple[x509.ExtensionType, bool]]
                 ) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + validity)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA that signs the cluster's serving and client certificates."""

    issued: Issued
    validity: dt.timedelta

    @classmethod
    def create(cls, validity: dt.timedelta, name: str = "localkube-ca") -> CertificateAuthority:
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False,
        )
        cert = _certificate(subject, subject, key, key, validity, [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (usage, True),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        ])
        return cls(Issued(cert, key), validity)

    @property
    def cert_pem(self) -> bytes:
        return self.issued.cert_pem

    def issue_server(self, common_name: str, names: tuple[str, ...] = (), ips: tuple[str, ...] = ()
                     ) -> Issued:
        """A serving certificate valid for the DNS ``names`` and the IP addresses ``ips``."""
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self._issue(common_name, (), x509.ExtendedKeyUsageOID.SERVER_AUTH,
                           [(x509.SubjectAlternativeName(sans), False)])

    def issue_client(self, user: str, groups: tuple[str, ...] = ()) -> Issued:
        """A client certificate the apiserver reads as ``user`` in ``groups``."""
        return self._issue(user, groups, x509.ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _issue(self, common_name: str, groups: tuple[str, ...], usage: x509.ObjectIdentifier,
               extra: list[tuple[x509.ExtensionType, bool]]) -> Issued:
        key = new_key()
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        cert = _certificate(x509.Name(attributes), self.issued.cert.subject, key, self.issued.key,
                            self.validity, [
                                (x509.BasicConstraints(ca=False, path_length=None), True),
                                (x509.ExtendedKeyUsage([usage]), False),
                                (x509.AuthorityKeyIdentifier.from_issuer_public_key(
                                    self.issued.key.public_key()), False),
                                *extra,
                            ])
        return Issued(cert, key)
