"""TLS, passwords and ACLs for a real mosquitto in tests.

Everything is generated in a temp dir per test: a CA (:func:`make_tls_files`, with
``cryptography``), a password file (the real ``mosquitto_passwd``), an ACL file, and the
extra config lines that turn :class:`tests.mqtt_helpers.Broker` into a TLS listener that
requires a user name and password (:func:`broker_config`). :func:`secure_broker` does all
of it in one call::

    sb = secure_broker(tmp_path, users={"daemon": "pw"},
                       acl={"daemon": ["readwrite sigmoid-edge/n1/#"]})
    mosquitto_pub(sb.broker, "sigmoid-edge/n1/x", "hi", extra=sb.client_args("daemon"))
    with Collector(sb.broker, "sigmoid-edge/#", **sb.paho_kwargs("daemon")) as c: ...
    sb.broker.stop()
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.mqtt_helpers import HOST, Broker, require

# The users of a typical deployment, and their ACL for a daemon with node name ``node``: it
# may read sensors and write only its outputs and its own topics.
USERS = {"daemon": "d-pass", "sensor": "s-pass", "ops": "o-pass"}


def deployment_acl(node: str) -> dict[str, list[str]]:
    return {
        "daemon": ["read sensors/#", "write edge/#", f"readwrite sigmoid-edge/{node}/#"],
        "sensor": ["write sensors/#"],
        "ops": ["read #"],
    }


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a test PKI: a CA, a server certificate and a client certificate."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys are quick to make and every OpenSSL mosquitto links against accepts them.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigmoid-edge tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: x509.Name, public_key, issuer: x509.Name, issuer_key, *, ca: bool,
          san: x509.SubjectAlternativeName | None = None, usage=None,
          days: int = 2) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls_files(directory: Path, hosts: Iterable[str] = (HOST, "localhost"),
                   client_cn: str = "sigmoid-edge-test-client") -> TLSFiles:
    """Generate a test CA, a server certificate for ``hosts`` and a client certificate.

    Parameters
    ----------
    directory : Path
        Where the PEM files go (created if missing).
    hosts : iterable of str
        IP addresses and DNS names the server certificate is valid for.
    client_cn : str
        Common name of the client certificate (mosquitto can use it as the user name with
        ``use_identity_as_username``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca_name = _name("sigmoid-edge test CA")
    ca = _cert(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    server = _cert(_name(next(iter(hosts), "localhost")), server_key.public_key(), ca_name,
                   ca_key, ca=False, san=x509.SubjectAlternativeName(names),
                   usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    client = _cert(_name(client_cn), client_key.public_key(), ca_name, ca_key, ca=False,
                   usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    files = TLSFiles(
        ca_cert=directory / "ca.crt", ca_key=directory / "ca.key",
        server_cert=directory / "server.crt", server_key=directory / "server.key",
        client_cert=directory / "client.crt", client_key=directory / "client.key",
    )
    for path, cert in ((files.ca_cert, ca), (files.server_cert, server),
                       (files.client_cert, client)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path, key in ((files.ca_key, ca_key), (files.server_key, server_key),
                      (files.client_key, client_key)):
        _write_key(path, key)
    return files


def make_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """Write a mosquitto password file for ``users`` (name -> password), with mosquitto_passwd."""
    path = Path(path)
    path.unlink(missing_ok=True)
    passwd = require("mosquitto_passwd")
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([passwd, *create, "-b", str(path), user, password],
                       check=True, capture_output=True, timeout=30)
    return path


def make_acl_file(path: Path, acl: Mapping[str, Iterable[str]],
                  anonymous: Iterable[str] = ()) -> Path:
    """Write a mosquitto ACL file.

    Parameters
    ----------
    acl : mapping
        User name -> rules such as ``"readwrite sigmoid-edge/n1/#"``, ``"read sensors/#"``,
        ``"write edge/+/classification"`` (mosquitto's ``topic`` lines without the keyword).
    anonymous : iterable of str
        Rules for clients without a user name (before any ``user`` line).
    """
    lines = [f"topic {rule}" for rule in anonymous]
    for user, rules in acl.items():
        lines.append(f"user {user}")
        lines += [f"topic {rule}" for rule in rules]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def broker_config(tls: TLSFiles | None = None, password_file: Path | None = None,
                  acl_file: Path | None = None, require_certificate: bool = False) -> str:
    """Extra config lines for :class:`Broker` (its ``config=``): TLS, passwords, ACL.

    The lines follow Broker's ``listener`` line, so the TLS settings apply to the broker's
    own port. Anonymous access is off whenever a password file is given.
    """
    lines = []
    if tls is not None:
        lines += [f"cafile {tls.ca_cert}", f"certfile {tls.server_cert}",
                  f"keyfile {tls.server_key}", "tls_version tlsv1.2"]
        if require_certificate:
            lines.append("require_certificate true")
    if password_file is not None:
        lines += [f"password_file {password_file}", "allow_anonymous false"]
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines)


@dataclass
class SecureBroker:
    """A started TLS + password + ACL :class:`Broker` and the files that configure it."""

    broker: Broker
    tls: TLSFiles
    users: dict[str, str]
    password_file: Path
    acl_file: Path
    password_files: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``mqtts://127.0.0.1:PORT``."""
        return self.broker.url

    def client_args(self, user: str | None, password: str | None = None,
                    client_cert: bool = False) -> tuple[str, ...]:
        """Extra arguments for ``mosquitto_pub``/``mosquitto_sub`` (the ``extra=`` parameter)."""
        args = ["--cafile", str(self.tls.ca_cert)]
        if user is not None:
            args += ["-u", user, "-P", self.users[user] if password is None else password]
        if client_cert:
            args += ["--cert", str(self.tls.client_cert), "--key", str(self.tls.client_key)]
        return tuple(args)

    def paho_kwargs(self, user: str | None, password: str | None = None) -> dict:
        """Keyword arguments for :class:`tests.mqtt_helpers.Collector`."""
        return {"username": user,
                "password": None if user is None else
                (self.users[user] if password is None else password),
                "tls_ca": str(self.tls.ca_cert)}

    def password_file_for(self, user: str) -> Path:
        """A file holding ``user``'s password (for ``--password-file``)."""
        if user not in self.password_files:
            path = self.tls.ca_cert.parent / f"{user}.password"
            path.write_text(self.users[user] + "\n")
            path.chmod(0o600)
            self.password_files[user] = path
        return self.password_files[user]


def secure_broker(workdir: Path, users: Mapping[str, str],
                  acl: Mapping[str, Iterable[str]] | None = None,
                  require_certificate: bool = False, **broker_kwargs) -> SecureBroker:
    """Start a mosquitto that takes only TLS clients with a user name and password.

    Parameters
    ----------
    workdir : Path
        Temp dir for the PKI, password file, ACL and the broker's own files.
    users : mapping
        User name -> password.
    acl : mapping, optional
        User name -> rules (see :func:`make_acl_file`); by default every user may
        read and write every topic.
    require_certificate : bool
        Also require a client certificate signed by the test CA.
    **broker_kwargs
        Passed to :class:`Broker` (``port``, ``persistence``).

    Returns
    -------
    SecureBroker
        Started; call ``.broker.stop()`` when done.
    """
    workdir = Path(workdir)
    tls = make_tls_files(workdir / "pki")
    password_file = make_password_file(workdir / "passwords", users)
    acl_file = make_acl_file(workdir / "acl",
                             acl if acl is not None else {u: ["readwrite #"] for u in users})
    config = broker_config(tls, password_file, acl_file, require_certificate)
    broker = Broker(workdir / "broker", config=config, tls=True, **broker_kwargs).start()
    return SecureBroker(broker=broker, tls=tls, users=dict(users), password_file=password_file,
                        acl_file=acl_file)
