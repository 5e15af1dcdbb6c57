"""A TCP proxy in front of the broker that can cut off one Kafka client, by its ``client.id``.

Tansu accepts a topic deletion but goes on acknowledging writes to the deleted topic, and accepts
``max.message.bytes`` changes without enforcing them, so "the destination is not writable" cannot be
made on the broker itself. Instead the broker advertises this proxy, every client connects through
it, and ``block(client_id)`` closes that client's connections and refuses new ones: its requests
are never answered and librdkafka fails its messages after ``message.timeout.ms``.

The client id is read from the header of the first request on a connection (Kafka request header
v1+: size, api key, api version, correlation id, then client id as an int16-length string).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">ihhih")  # size, api_key, api_version, correlation_id, client_id length


class BlockingProxy:
    def __init__(self, upstream_port: int, listen_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream = (host, upstream_port)
        self.listen_port = listen_port
        self.refused = 0
        """Connections closed because their client was blocked."""
        self._blocked: set[str] = set()
        self._live: dict[socket.socket, str] = {}
        self._lock = threading.Lock()
        self._server: socket.socket | None = None

    def start(self) -> BlockingProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.listen_port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            for conn in list(self._live):
                _close(conn)

    def block(self, client_id: str) -> None:
        """Cut the client off now and refuse its reconnections until ``unblock``."""
        with self._lock:
            self._blocked.add(client_id)
            victims = [conn for conn, cid in self._live.items() if cid == client_id]
        for conn in victims:
            _close(conn)
        log.info("proxy: blocked %s (%d connections closed)", client_id, len(victims))

    def unblock(self, client_id: str) -> None:
        with self._lock:
            self._blocked.discard(client_id)

    def _accept(self) -> None:
        while self._server is not None:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            first = _read_frame(client)
            client_id = _client_id(first)
            with self._lock:
                blocked = client_id in self._blocked
                if not blocked:
                    self._live[client] = client_id
            if blocked:
                self.refused += 1
                _close(client)
                return
            upstream = socket.create_connection(self.upstream)
        except OSError:
            _close(client)
            return
        upstream.sendall(first)
        threading.Thread(target=_pump, args=(upstream, client), name="proxy-down", daemon=True).start()
        _pump(client, upstream)
        with self._lock:
            self._live.pop(client, None)


def _read_frame(sock: socket.socket) -> bytes:
    size = _read_exact(sock, 4)
    return size + _read_exact(sock, struct.unpack(">i", size)[0])


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return bytes(data)


def _client_id(frame: bytes) -> str:
    if len(frame) < _HEADER.size:
        return ""
    length = _HEADER.unpack_from(frame)[4]
    return frame[_HEADER.size:_HEADER.size + length].decode(errors="replace") if length > 0 else ""


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes until either side closes, then close both."""
    try:
        while True:
            data = src.recv(262_144)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
