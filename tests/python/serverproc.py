"""Run the release build of ferroserve as a child process for the Python suites.

Both suites (``grpc_stubs`` and ``official``) import this module from their
``conftest.py``.  It depends only on ``grpcio``, which both virtual
environments have, and talks to the standard gRPC health service with
hand-encoded messages so that it needs no generated stubs.

A server started with TLS (``--ssl_config_file``) or a bearer token
(``--auth_token_file``) is checked for readiness with the channel
credentials, channel options and call metadata its caller passes to
``running_server``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
BINARY = REPO_ROOT / "target" / "release" / "ferroserve"
LOG_DIR = REPO_ROOT / "target" / "python-tests"

MODEL_NAME = "mnist"
MODEL_BASE_PATH = "examples/models/mnist"
MNIST_FLAGS = (f"--model_name={MODEL_NAME}", f"--model_base_path={MODEL_BASE_PATH}")

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 60

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
# grpc.health.v1.HealthCheckResponse.ServingStatus values
SERVING = 1
NOT_SERVING = 2


class ServerError(RuntimeError):
    """The server failed to start, died, or did not shut down cleanly."""


@dataclasses.dataclass(frozen=True)
class Server:
    """A running server: where to reach it and where its output goes."""

    address: str
    log_path: Path
    process: subprocess.Popen
    # "127.0.0.1:<port>" of the REST API when started with ``rest_api=True``.
    rest_address: str | None = None

    @property
    def port(self) -> int:
        """The gRPC port."""
        return int(self.address.rsplit(":", 1)[1])

    @property
    def rest_port(self) -> int | None:
        """The REST port, or None when REST is off."""
        if self.rest_address is None:
            return None
        return int(self.rest_address.rsplit(":", 1)[1])


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    return free_loopback_ports(1)[0]


def free_loopback_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    The sockets are held open together, so the ports cannot repeat.
    """
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def encode_health_check_request(service: str) -> bytes:
    """Serialize ``grpc.health.v1.HealthCheckRequest{service}``."""
    payload = service.encode("utf-8")
    if not payload:
        return b""
    return b"\x0a" + encode_varint(len(payload)) + payload


def decode_health_check_response(data: bytes) -> int:
    """Return the ``status`` of a serialized ``HealthCheckResponse``.

    The message has a single field (``status = 1``, an enum); proto3 omits it
    when it holds the default value 0 (UNKNOWN).
    """
    if not data:
        return 0
    if data[0] != 0x08:
        raise ValueError(f"unexpected HealthCheckResponse bytes: {data.hex()}")
    status, end = _decode_varint(data, 1)
    if end != len(data):
        raise ValueError(f"trailing bytes in HealthCheckResponse: {data.hex()}")
    return status


def health_check(
    channel: grpc.Channel,
    service: str,
    timeout: float = 5.0,
    wait_for_ready: bool = False,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> int:
    """Call grpc.health.v1.Health/Check for ``service`` and return its status.

    ``metadata`` is sent with the call (``None`` sends none).
    """
    check = channel.unary_unary(HEALTH_CHECK_METHOD)
    response = check(
        encode_health_check_request(service),
        timeout=timeout,
        wait_for_ready=wait_for_ready,
        metadata=metadata,
    )
    return decode_health_check_response(response)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, for failure messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return f"<cannot read {path}: {err}>"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- last {lines} lines of {path} ---\n{tail}\n--- end of log ---"


@contextlib.contextmanager
def running_server(
    suite: str,
    flags: Sequence[str] = MNIST_FLAGS,
    *,
    binary: Path = BINARY,
    wrapper: Sequence[str] = (),
    rest_api: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    channel_options: Sequence[tuple[str, Any]] = (),
    metadata: Sequence[tuple[str, str]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Start ferroserve and stop it with SIGTERM.

    By default the server serves the bundled mnist model; ``flags`` replaces
    the model flags (for example with ``--model_config_file=...``) and may add
    others; ``--port`` and ``--rest_api_port`` are always set, the latter to 0
    (REST off) unless ``rest_api`` is true, which picks a free port for it,
    reported as ``Server.rest_address``.  ``binary``
    runs another copy of the server and ``wrapper`` is a command prefix that
    must exec it in place (such as ``setpriv``), so SIGTERM reaches the server.
    ``env`` adds to (or overrides) the environment the server inherits.

    Yields once a health check for the whole server ("") answers SERVING
    (and, with ``rest_api``, the REST port accepts connections).  The check
    goes over an insecure channel to ``Server.address`` unless
    ``credentials`` are given (for a server with ``--ssl_config_file``), in
    which case it goes over a secure one; ``channel_options`` (such as
    ``grpc.ssl_target_name_override``) configure that channel and
    ``metadata`` is sent with each check.
    On exit the server must terminate with status 0 within
    ``SHUTDOWN_TIMEOUT_S``; otherwise it is killed and ``ServerError`` raised.
    The server's stdout and stderr go to ``target/python-tests/<suite>-server.log``.
    """
    if not binary.is_file():
        raise ServerError(
            f"{binary} does not exist: build it with `cargo build --release --locked`"
        )
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{suite}-server.log"
    port, rest_port = free_loopback_ports(2) if rest_api else (free_loopback_port(), 0)
    address = f"127.0.0.1:{port}"
    command = [
        *wrapper,
        str(binary),
        f"--port={port}",
        f"--rest_api_port={rest_port}",
        *flags,
    ]
    with open(log_path, "wb") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
        )
    server = Server(
        address=address,
        log_path=log_path,
        process=process,
        rest_address=f"127.0.0.1:{rest_port}" if rest_api else None,
    )
    try:
        _wait_until_serving(
            server,
            credentials=credentials,
            channel_options=channel_options,
            metadata=metadata,
        )
        yield server
    except BaseException:
        _kill(process)
        raise
    _terminate(server)


def _wait_until_serving(
    server: Server,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    channel_options: Sequence[tuple[str, Any]] = (),
    metadata: Sequence[tuple[str, str]] | None = None,
) -> None:
    """Wait for the port to accept connections, then for a SERVING answer.

    Polling the TCP port first keeps gRPC's reconnect backoff out of the
    startup time; the health check then runs with ``wait_for_ready``.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    _wait_for_port(server, server.address, deadline)

    last_answer = "none"
    options = list(channel_options)
    if credentials is None:
        opened = grpc.insecure_channel(server.address, options=options)
    else:
        opened = grpc.secure_channel(server.address, credentials, options=options)
    with opened as channel:
        while time.monotonic() < deadline:
            _check_alive(server)
            try:
                status = health_check(
                    channel,
                    "",
                    timeout=max(0.1, min(5.0, deadline - time.monotonic())),
                    wait_for_ready=True,
                    metadata=metadata,
                )
            except grpc.RpcError as err:
                last_answer = f"{err.code().name}: {err.details()}"
            else:
                if status == SERVING:
                    break
                last_answer = f"status {status}"
            time.sleep(0.1)
        else:
            raise ServerError(
                f"server at {server.address} not SERVING after {STARTUP_TIMEOUT_S:.0f} s "
                f"(last health answer: {last_answer})\n" + log_tail(server.log_path)
            )
    if server.rest_address is not None:
        _wait_for_port(server, server.rest_address, deadline)


def _wait_for_port(server: Server, address: str, deadline: float) -> None:
    """Wait until ``address`` ("host:port") of the server accepts connections."""
    host, port = address.rsplit(":", 1)
    while True:
        _check_alive(server)
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"server port {address} not open after "
                    f"{STARTUP_TIMEOUT_S:.0f} s ({err})\n" + log_tail(server.log_path)
                ) from None
        time.sleep(0.1)


def _check_alive(server: Server) -> None:
    code = server.process.poll()
    if code is not None:
        raise ServerError(
            f"server exited with status {code} during startup\n"
            + log_tail(server.log_path)
        )


def _terminate(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill(server.process)
        raise ServerError(
            f"server did not exit within {SHUTDOWN_TIMEOUT_S:.0f} s of SIGTERM; killed\n"
            + log_tail(server.log_path)
        ) from None
    if code != 0:
        raise ServerError(
            f"server exited with status {code} after SIGTERM, expected 0\n"
            + log_tail(server.log_path)
        )


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def encode_varint(value: int) -> bytes:
    """A protobuf base-128 varint of a non-negative ``value``."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError(f"truncated varint in {data.hex()}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
