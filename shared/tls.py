"""TLS for every gRPC server and client of the suite, from configuration.

A process has one identity: the certificate, key and CA bundle named by
RECSYS_TLS_CERT_FILE, RECSYS_TLS_KEY_FILE and RECSYS_TLS_CA_FILE (each overridden per
service, e.g. RECSYS_GATEWAY_TLS_CERT_FILE). It serves with that certificate and presents
it as its client certificate on every call it makes, and it trusts peers the CA signed.
With none of them set everything stays plaintext, as on loopback by default.

cert-manager rotates the files in place (a Secret volume swaps them at once), so nothing
holds them: a server looks at their modification times on each new connection and takes
the new pair once it is whole and matching; a client channel is rebuilt on its next call
(shared/clients.py). A half-written or mismatched pair keeps the old one in use.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from shared.config import ConfigError, Env

log = logging.getLogger(__name__)
_NAMES = ("CERT_FILE", "KEY_FILE", "CA_FILE")
RELOAD_CHECK_S = 1.0  # how often a client looks at its certificate files, at most


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM chain, leaf first
    key: Path  # PEM private key of the leaf
    ca: Path  # PEM bundle of the CAs whose peers this process trusts

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """Changes whenever any of the files does (a Secret's symlink swap included)."""
        stamps = []
        for path in (self.cert, self.key, self.ca):
            try:
                status = path.stat()
                stamps.append((status.st_mtime_ns, status.st_size))
            except OSError:
                stamps.append((-1, -1))
        return tuple(stamps)

    def read(self) -> Identity:
        """The three files, checked to be a certificate with its own key and a CA bundle;
        ValueError (with why) when they are not, for instance mid-rotation."""
        try:
            cert, key, ca = (p.read_bytes() for p in (self.cert, self.key, self.ca))
        except OSError as error:
            raise ValueError(f"{error.filename}: {error.strerror}") from None
        _check_pair(cert, key)
        if b"-----BEGIN CERTIFICATE-----" not in ca:
            raise ValueError(f"{self.ca}: no PEM certificate in the CA bundle")
        return Identity(cert, key, ca)


@dataclass(frozen=True)
class Identity:
    cert: bytes
    key: bytes
    ca: bytes


def _check_pair(cert: bytes, key: bytes) -> None:
    """Raises ValueError unless `cert` is a PEM certificate chain that `key` belongs to."""
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        os.chmod(key_path, 0o600)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, OSError) as error:
            raise ValueError(f"the certificate and key do not make a pair: {error}") from None


def tls_files(service: str, environ: Mapping[str, str] | None = None) -> TlsFiles | None:
    """The files for `service` ("gateway", ...), its own variables first, then the suite's;
    None when none is set. All three or none, and readable at start."""
    own, suite = Env(f"RECSYS_{service.upper()}_TLS_", environ), Env("RECSYS_TLS_", environ)
    values = {name: own.string(name, suite.string(name, "")) for name in _NAMES}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        wanted = ", ".join(f"RECSYS_TLS_{name}" for name in missing)
        raise ConfigError(f"TLS needs a certificate, its key and a CA bundle: {wanted} unset")
    files = TlsFiles(*(Path(values[name]) for name in _NAMES))
    try:
        files.read()
    except ValueError as error:
        raise ConfigError(f"RECSYS_TLS_* for {service}: {error}") from None
    return files


class Reloading:
    """The identity from `files`, re-read when they change, the last good one kept."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.stamp = files.stamp()
        self.identity = files.read()

    def changed(self) -> Identity | None:
        stamp = self.files.stamp()
        if stamp == self.stamp:
            return None
        try:
            identity = self.files.read()
        except ValueError as error:
            log.warning("new TLS files not taken (yet)", extra={"why": str(error)})
            return None  # tried again on the next connection
        self.stamp, self.identity = stamp, identity
        log.info("TLS certificate reloaded", extra={"cert": str(self.files.cert)})
        return identity


def server_credentials(files: TlsFiles, require_client_cert: bool) -> grpc.ServerCredentials:
    """Credentials that take rotated files up on the next new connection; with
    `require_client_cert` a peer without a certificate the CA signed is refused."""
    reloading = Reloading(files)

    def configuration(identity: Identity) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(identity.key, identity.cert)], root_certificates=identity.ca
        )

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        identity = reloading.changed()
        return configuration(identity) if identity else None

    return grpc.dynamic_ssl_server_credentials(
        configuration(reloading.identity), fetch, require_client_authentication=require_client_cert
    )


def channel_credentials(identity: Identity) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca, private_key=identity.key, certificate_chain=identity.cert
    )


# The identity this process calls other services with: set at start by shared/server.py
# from the service's configuration; a process that serves nothing (a Ray worker running a
# full retrain, a command-line tool) takes the suite's RECSYS_TLS_* on its first call.
_UNSET = TlsFiles(Path(), Path(), Path())
_process_files: TlsFiles | None = _UNSET


def use_for_calls(files: TlsFiles | None) -> None:
    global _process_files
    _process_files = files


def files_for_calls() -> TlsFiles | None:
    global _process_files
    if _process_files is _UNSET:
        _process_files = tls_files("suite")
    return _process_files


def peer_identities(context: grpc.aio.ServicerContext) -> set[str]:
    """The names the caller's verified client certificate carries (its subject
    alternative names and common name); empty for a call without one."""
    auth = context.auth_context()
    names = auth.get("x509_subject_alternative_name", []) + auth.get("x509_common_name", [])
    return {n.decode() if isinstance(n, bytes) else str(n) for n in names}
