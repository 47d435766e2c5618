"""A throwaway certificate authority for the OTLP TLS tests, made with the openssl command.

A CA, a server certificate for 127.0.0.1 / localhost, a client certificate (for mutual
TLS) and a second CA nobody trusts; plus the server side of TLS for the receivers.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class Pki:
    ca: Path              # trusted CA certificate
    server_cert: Path
    server_key: Path
    client_cert: Path     # common name CLIENT_NAME
    client_key: Path
    other_ca: Path        # a CA that signed nothing here

    def grpc_server(self, require_client: bool = False) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.server_key.read_bytes(), self.server_cert.read_bytes())],
                                           root_certificates=self.ca.read_bytes() if require_client else None,
                                           require_client_auth=require_client)

    def http_server(self, require_client: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


CLIENT_NAME = "spanprobe-test-client"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=%s" % name,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
             cwd=directory)


def _leaf(directory: Path, name: str, common_name: str, extensions: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=%s" % common_name, cwd=directory)
    (directory / (name + ".ext")).write_text(extensions)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext", cwd=directory)


def make_pki(directory: Path) -> Pki:
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(directory, "server", "localhost",
          "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _leaf(directory, "client", CLIENT_NAME, "extendedKeyUsage=clientAuth\n")
    return Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key",
               directory / "client.pem", directory / "client.key", directory / "other-ca.pem")
