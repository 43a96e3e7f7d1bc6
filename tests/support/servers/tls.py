"""A self-signed certificate for 127.0.0.1, and TLS contexts that use it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tls:
    """A self-signed certificate for 127.0.0.1 and contexts that use it."""

    certificate: Path
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts only this certificate, with hostname checks on


def self_signed_tls(directory: Path) -> Tls:
    """Make a certificate for 127.0.0.1 with the ``openssl`` command (skip if absent)."""
    import pytest

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    key, certificate = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(certificate), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certificate, key)
    client = ssl.create_default_context(cafile=str(certificate))
    return Tls(certificate, server, client)
