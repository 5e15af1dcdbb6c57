"""TLS to the broker, for real: stunnel terminates TLS in front of an embedded broker that advertises
the proxy's address, so every client connection (metadata, produce, fetch, commit) goes through TLS.

The proxy also asks for a client certificate (mutual TLS) whose key is encrypted, so the key
password that streamscore gets from the environment is needed and used; the logs, at DEBUG with
librdkafka's own debug output on, must never show it.

stunnel comes from Debian (``apt-get install stunnel4``; ``scripts/test.sh`` installs it): where it
is missing the tests skip, saying so. They start their own broker, whatever
``STREAMSCORE_TEST_BOOTSTRAP`` says.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import trustme
from confluent_kafka import Producer
from cryptography.hazmat.primitives import serialization

from streamscore.broker import EmbeddedBroker, free_port
from streamscore.demo.transactions import TransactionGenerator
from streamscore.engines.kafka_admin import create_topics
from tests.support import OutputReader, ServiceProcess, Topics, produce_one, stop_and_read

pytestmark = pytest.mark.integration

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
KEY_PASSWORD = "k3y-pa55-do-not-log-7f3a"
SASL_PASSWORD = "sasl-pa55-do-not-log-91c2"


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str
    """The proxy's address: TLS only."""
    ca: Path
    client_cert: Path
    client_key: Path
    """Encrypted with KEY_PASSWORD."""
    other_ca: Path
    """A CA that did not sign the proxy's certificate."""

    def client(self, ca: Path | None = None) -> dict[str, str]:
        """librdkafka settings for a client of the proxy; the key password comes separately."""
        return {"security.protocol": "SSL", "ssl.ca.location": str(ca or self.ca),
                "ssl.certificate.location": str(self.client_cert), "ssl.key.location": str(self.client_key)}


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited with code {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout}s")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    if STUNNEL is None:
        pytest.skip("stunnel is not installed (apt-get install stunnel4, or run ./scripts/test.sh)")
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("streamscore-client")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(folder / "other-ca.pem"))
    server.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    (folder / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))

    tls_port = free_port()
    (folder / "stunnel.conf").write_text(
        f"foreground = yes\npid =\noutput = {folder / 'stunnel.log'}\ndebug = 5\n"
        f"[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{{broker_port}}\n"
        f"cert = {folder / 'server.pem'}\nCAfile = {folder / 'ca.pem'}\nverifyChain = yes\n"
    )
    with EmbeddedBroker(log_file=folder / "tansu.log", advertised=f"127.0.0.1:{tls_port}") as broker:
        conf = folder / "stunnel.conf"
        conf.write_text(conf.read_text().replace("{broker_port}", str(broker.port)))
        proxy = subprocess.Popen([STUNNEL, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 stdin=subprocess.DEVNULL)
        try:
            wait_listening(tls_port, proxy, "stunnel")
            yield TlsBroker(f"127.0.0.1:{tls_port}", folder / "ca.pem", folder / "client.pem", folder / "client.key",
                            folder / "other-ca.pem")
        finally:
            proxy.terminate()
            proxy.wait(10)


@pytest.fixture
def tls_config(tls_broker: TlsBroker, write_config: Callable[..., Path]) -> Callable[..., tuple[Path, Topics]]:
    """Topics on the TLS broker and a service config for them; the key password is not in the file."""

    def make(client: dict[str, str] | None = None) -> tuple[Path, Topics]:
        run = uuid.uuid4().hex[:8]
        t = Topics(f"in-{run}", f"scores-{run}", f"dlq-{run}", f"group-{run}", 2)
        create_topics(tls_broker.bootstrap, {t.source: 2, t.destination: 2, t.dead_letter: 1},
                      client={**tls_broker.client(), "ssl.key.password": KEY_PASSWORD})
        kafka = {"bootstrap_servers": tls_broker.bootstrap, "client": client or tls_broker.client()}
        return write_config(t, kafka=kafka), t

    return make


SECRET_ENV = {"STREAMSCORE_KAFKA__CLIENT__SSL_KEY_PASSWORD": KEY_PASSWORD}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamscore", *args], capture_output=True, text=True, timeout=90,
                          env={**os.environ, **(env or {})}, check=False)


def test_validate_connects_through_tls(tls_config: Callable[..., tuple[Path, Topics]]) -> None:
    config, _ = tls_config()
    result = run_cli("validate", "-c", str(config), "--timeout", "15", env=SECRET_ENV)
    assert result.returncode == 0, result.stderr
    assert "broker ok" in result.stdout


def test_a_wrong_ca_fails_with_one_clear_line(tls_broker: TlsBroker, tls_config: Callable[..., tuple[Path, Topics]]
                                              ) -> None:
    config, _ = tls_config(client=tls_broker.client(ca=tls_broker.other_ca))
    result = run_cli("validate", "-c", str(config), "--timeout", "5", env=SECRET_ENV)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("streamscore: error:")]
    assert len(errors) == 1, result.stderr
    assert tls_broker.bootstrap in errors[0] and "certificate verify failed" in errors[0], errors[0]


@pytest.mark.parametrize("password", [None, "not-the-key-password-5e1d"])
def test_without_the_right_key_password_validate_fails_with_one_line_that_keeps_it_secret(
    tls_config: Callable[..., tuple[Path, Topics]], password: str | None,
) -> None:
    config, _ = tls_config()
    env = {} if password is None else {"STREAMSCORE_KAFKA__CLIENT__SSL_KEY_PASSWORD": password}
    result = run_cli("validate", "-c", str(config), "--timeout", "5", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("streamscore: error:")]
    assert len(errors) == 1 and "kafka.client" in errors[0] and "ssl.key" in errors[0], result.stderr
    assert password is None or password not in result.stdout + result.stderr


def test_scores_end_to_end_through_tls_and_never_logs_the_secrets(
    tls_broker: TlsBroker, tls_config: Callable[..., tuple[Path, Topics]], service: Callable[..., ServiceProcess],
    output_reader: Callable[..., OutputReader], tmp_path: Path,
) -> None:
    config, t = tls_config()
    client = {**tls_broker.client(), "ssl.key.password": KEY_PASSWORD}
    events = list(TransactionGenerator(seed=8).encoded(300))
    producer = Producer({"bootstrap.servers": tls_broker.bootstrap, **client})
    for key, value in events:
        produce_one(producer, t.source, value, key)
    assert producer.flush(30) == 0

    # DEBUG logs and every librdkafka debug context; a SASL password is set too (librdkafka ignores
    # it without SASL, but it goes through the same settings path as in a SASL_SSL deployment)
    # the key password from a file (as a mounted Kubernetes secret), the SASL one from the environment
    secret_file = tmp_path / "key-password"
    secret_file.write_text(KEY_PASSWORD + "\n")
    env = {"STREAMSCORE_KAFKA__CLIENT__SSL_KEY_PASSWORD": f"${{file:{secret_file}}}",
           "STREAMSCORE_KAFKA__CLIENT__SASL_PASSWORD": SASL_PASSWORD,
           "STREAMSCORE_LOG_LEVEL": "DEBUG", "STREAMSCORE_KAFKA__CLIENT__DEBUG": "all"}
    proc = service(config, env=env)
    proc.wait_ready(60)
    reader = output_reader(t, tls_broker.bootstrap, client)
    reader.read_until(lambda records: len(records) >= len(events), 60, f"{len(events)} outputs")
    outputs = stop_and_read(reader, proc, timeout=60)

    assert len(outputs) == len(events)
    assert {orjson.loads(r.value or b"{}")["source"]["topic"] for r in outputs} == {t.source}
    log = proc.log()
    assert "ssl.key.password = [redacted]" in log, "librdkafka printed its configuration into the log"
    assert KEY_PASSWORD not in log and SASL_PASSWORD not in log

