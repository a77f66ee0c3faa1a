"""TLS and bearer tokens, driven by the official TensorFlow Serving client.

``--ssl_config_file`` (gRPC) and ``--rest_api_ssl_config_file`` (REST) name
a text-format ``tensorflow.serving.SSLConfig`` with the PEM key and
certificates inline, exactly as TensorFlow Serving reads it;
``--auth_token_file`` names a file holding a token that every call except
the gRPC health service, the Prometheus page and CORS preflights must carry
as ``authorization: Bearer <token>``.

The certificates are made once per module with the ``openssl`` command-line
tool: a CA, a server certificate for ``localhost`` (and 127.0.0.1) and a
client certificate, both signed by that CA, and a second, "rogue" CA with a
client certificate of its own.  Each scenario runs its own server, started
by a class-scoped fixture and stopped when the class is done.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import contextlib
import secrets
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import digits
import grpc
import numpy as np
import pytest
import serverproc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

MODEL_NAME = "mnist"
SIGNATURE_NAME = "serving_default"
IMAGE_PATHS = digits.digit_images()
IMAGES = digits.load_batch(IMAGE_PATHS)
CLASSES = [digits.label_of(path) for path in IMAGE_PATHS]

# No drain delay on SIGTERM: nothing balances load onto these servers.
SERVER_FLAGS = (*serverproc.MNIST_FLAGS, "--shutdown_delay_seconds=0")
RPC_TIMEOUT_S = 10.0
# How long a refused call may take to fail.
REFUSAL_TIMEOUT_S = 5.0
# How long the server may take to reject a bad flag and exit.
EXIT_TIMEOUT_S = 10.0
# The status ferroserve exits with when a flag is invalid (EX_USAGE).
EXIT_INVALID_FLAG = 64
METRICS_PATH = "/monitoring/prometheus/metrics"
# Connections left in the middle of a TLS handshake at once.
STALLED_CONNECTIONS = 8

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

# Extensions for the certificates ``make_pki`` signs.
OPENSSL_CONFIG = """\
[req]
distinguished_name = dn

[dn]

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


# --- certificates ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Identity:
    """A PKCS#8 private key and its certificate, PEM-encoded."""

    key: bytes
    cert: bytes


@dataclasses.dataclass(frozen=True)
class Pki:
    """The test certificates, PEM-encoded, and the directory that holds them."""

    directory: Path
    ca_path: Path
    ca: bytes
    server: Identity
    client: Identity
    rogue_ca: bytes
    rogue_client: Identity


def openssl(directory: Path, *args: str) -> None:
    """Run ``openssl args`` in ``directory``; fail with its output if it fails."""
    result = subprocess.run(
        [OPENSSL, *args],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(args)} exited with status {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )


def new_key(directory: Path, name: str) -> Path:
    """An EC P-256 private key in PKCS#8 PEM (``BEGIN PRIVATE KEY``)."""
    path = directory / f"{name}.key"
    openssl(
        directory,
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path.name,
    )
    return path


def new_ca(directory: Path, name: str, config: Path) -> tuple[Path, Path]:
    """A self-signed CA: returns the paths of its key and certificate."""
    key = new_key(directory, name)
    cert = directory / f"{name}.pem"
    openssl(
        directory,
        "req",
        "-x509",
        "-new",
        "-sha256",
        "-days",
        "2",
        "-key",
        key.name,
        "-config",
        config.name,
        "-extensions",
        "ca",
        "-subj",
        f"/CN=ferroserve test {name}",
        "-out",
        cert.name,
    )
    return key, cert


def new_leaf(
    directory: Path,
    name: str,
    config: Path,
    ca: tuple[Path, Path],
    extensions: str,
    subject: str,
) -> Identity:
    """A new key and its certificate, signed by ``ca`` (its key and certificate paths)."""
    key = new_key(directory, name)
    request = directory / f"{name}.csr"
    cert = directory / f"{name}.pem"
    openssl(
        directory,
        "req",
        "-new",
        "-key",
        key.name,
        "-config",
        config.name,
        "-subj",
        subject,
        "-out",
        request.name,
    )
    ca_key, ca_cert = ca
    openssl(
        directory,
        "x509",
        "-req",
        "-sha256",
        "-days",
        "2",
        "-in",
        request.name,
        "-CA",
        ca_cert.name,
        "-CAkey",
        ca_key.name,
        "-set_serial",
        str(secrets.randbits(63) + 1),
        "-extfile",
        config.name,
        "-extensions",
        extensions,
        "-out",
        cert.name,
    )
    return Identity(key=key.read_bytes(), cert=cert.read_bytes())


def make_pki(directory: Path) -> Pki:
    """Make a CA, a server and a client under it, and a rogue CA and client."""
    config = directory / "openssl.cnf"
    config.write_text(OPENSSL_CONFIG, encoding="ascii")
    ca = new_ca(directory, "ca", config)
    rogue_ca = new_ca(directory, "rogue-ca", config)
    server = new_leaf(directory, "server", config, ca, "server", "/CN=localhost")
    client = new_leaf(directory, "client", config, ca, "client", "/CN=test client")
    rogue_client = new_leaf(
        directory, "rogue-client", config, rogue_ca, "client", "/CN=rogue client"
    )
    assert server.key.startswith(b"-----BEGIN PRIVATE KEY-----"), server.key[:40]
    return Pki(
        directory=directory,
        ca_path=ca[1],
        ca=ca[1].read_bytes(),
        server=server,
        client=client,
        rogue_ca=rogue_ca[1].read_bytes(),
        rogue_client=rogue_client,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def text_format_string(value: str) -> str:
    """``value`` as a quoted protobuf text-format string (PEM needs ``\\n``)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def write_ssl_config(
    path: Path,
    *,
    server_key: bytes,
    server_cert: bytes,
    custom_ca: bytes | None = None,
    client_verify: bool = False,
) -> Path:
    """Write a text-format ``tensorflow.serving.SSLConfig`` as TF Serving reads it."""
    lines = [
        f"server_key: {text_format_string(server_key.decode('ascii'))}",
        f"server_cert: {text_format_string(server_cert.decode('ascii'))}",
    ]
    if custom_ca is not None:
        lines.append(f"custom_ca: {text_format_string(custom_ca.decode('ascii'))}")
    if client_verify:
        lines.append("client_verify: true")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def server_ssl_config(pki: Pki, name: str, *, client_verify: bool = False) -> Path:
    """An SSLConfig for the server identity; ``client_verify`` trusts the CA."""
    return write_ssl_config(
        pki.directory / f"{name}.ssl.config",
        server_key=pki.server.key,
        server_cert=pki.server.cert,
        custom_ca=pki.ca if client_verify else None,
        client_verify=client_verify,
    )


# --- clients --------------------------------------------------------------------


def tls_credentials(pki: Pki, client: Identity | None = None) -> grpc.ChannelCredentials:
    """Credentials that trust the test CA and present ``client``, if any."""
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca)
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca,
        private_key=client.key,
        certificate_chain=client.cert,
    )


def localhost(server: serverproc.Server) -> str:
    """The gRPC target by the name the server certificate is for."""
    return f"localhost:{server.port}"


def predict_request(images: np.ndarray = IMAGES) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = SIGNATURE_NAME
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    return request


def predict_classes(
    channel: grpc.Channel,
    metadata: Sequence[tuple[str, str]] | None = None,
    timeout: float = RPC_TIMEOUT_S,
) -> list[int]:
    """Classify every committed digit with the official stub; return the classes."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(), timeout=timeout, metadata=metadata)
    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.shape == (len(CLASSES), digits.NUM_CLASSES)
    return probabilities.argmax(axis=1).tolist()


def predict_error(
    channel: grpc.Channel, metadata: Sequence[tuple[str, str]] | None = None
) -> grpc.RpcError:
    """Call Predict expecting it to fail; return the error."""
    with pytest.raises(grpc.RpcError) as failure:
        predict_classes(channel, metadata=metadata, timeout=REFUSAL_TIMEOUT_S)
    return failure.value


def predict_over_tls(
    server: serverproc.Server,
    pki: Pki,
    client: Identity | None = None,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> list[int]:
    """Predict on a fresh TLS connection (so every call makes its own handshake)."""
    with grpc.secure_channel(localhost(server), tls_credentials(pki, client)) as channel:
        return predict_classes(channel, metadata=metadata)


def predict_json(images: np.ndarray = IMAGES) -> bytes:
    return json.dumps({"instances": images.tolist()}).encode()


def rest_call(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    method: str | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """GET (or POST ``body`` to) ``url``; return status, headers and body.

    ``method`` overrides the method.  Error statuses are returned, not raised.
    """
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S, context=context) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def check_predictions(body: bytes) -> None:
    """A REST :predict answer classifies every committed digit correctly."""
    predictions = np.asarray(json.loads(body)["predictions"])
    assert predictions.shape == (len(CLASSES), digits.NUM_CLASSES)
    assert predictions.argmax(axis=1).tolist() == CLASSES


def check_model_status(body: bytes) -> None:
    """A REST GetModelStatus answer says version 1 of mnist is AVAILABLE."""
    [status] = json.loads(body)["model_version_status"]
    assert status["version"] == "1"
    assert status["state"] == "AVAILABLE"
    assert status["status"]["error_code"] == "OK"


def run_expecting_invalid_flag(flags: Sequence[str], flag: str) -> str:
    """Run the server with ``flags``; it must exit 64 naming ``flag``.

    Returns its stderr.
    """
    command = [
        str(serverproc.BINARY),
        f"--port={serverproc.free_loopback_port()}",
        "--rest_api_port=0",
        *serverproc.MNIST_FLAGS,
        *flags,
    ]
    try:
        result = subprocess.run(
            command,
            cwd=serverproc.REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(
            f"{' '.join(command)} still running after {EXIT_TIMEOUT_S:.0f} s "
            f"(stderr so far: {err.stderr!r})"
        ) from None
    assert result.returncode == EXIT_INVALID_FLAG, (result.returncode, result.stderr)
    assert (
        f"Failed to start server. Error: INVALID_ARGUMENT: --{flag}=" in result.stderr
    ), result.stderr
    return result.stderr


# --- 1. TLS for gRPC, no client certificates -------------------------------------


@pytest.fixture(scope="class")
def tls_server(pki) -> Iterator[serverproc.Server]:
    """gRPC over TLS (no client verification); REST stays plain HTTP."""
    flags = (*SERVER_FLAGS, f"--ssl_config_file={server_ssl_config(pki, 'tls')}")
    with serverproc.running_server(
        "tls",
        flags,
        rest_api=True,
        credentials=tls_credentials(pki),
        channel_options=[("grpc.ssl_target_name_override", "localhost")],
    ) as running:
        yield running


class TestTls:
    """gRPC over TLS without client certificates, REST plain."""

    def test_predict_over_tls(self, tls_server, pki):
        assert predict_over_tls(tls_server, pki) == CLASSES

    def test_insecure_channel_is_refused(self, tls_server, pki):
        with grpc.insecure_channel(localhost(tls_server)) as channel:
            error = predict_error(channel)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error

        assert predict_over_tls(tls_server, pki) == CLASSES

    def test_stalled_handshakes_hold_up_nobody(self, tls_server, pki):
        # Connections that send the start of a TLS record and then nothing.
        with contextlib.ExitStack() as stack:
            for _ in range(STALLED_CONNECTIONS):
                stalled = stack.enter_context(
                    socket.create_connection(("127.0.0.1", tls_server.port), timeout=5)
                )
                stalled.sendall(b"\x16\x03\x01")

            assert predict_over_tls(tls_server, pki) == CLASSES

    def test_get_model_metadata_over_tls(self, tls_server, pki):
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = MODEL_NAME
        request.metadata_field.append("signature_def")
        credentials = tls_credentials(pki)

        with grpc.secure_channel(localhost(tls_server), credentials) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.GetModelMetadata(request, timeout=RPC_TIMEOUT_S)

        assert response.model_spec.name == MODEL_NAME
        assert response.model_spec.version.value == 1
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        assert response.metadata["signature_def"].Unpack(signature_map)
        signature = signature_map.signature_def[SIGNATURE_NAME]
        assert signature.method_name == "tensorflow/serving/predict"
        assert set(signature.inputs) == {"image"}
        assert set(signature.outputs) == {"probabilities"}

    def test_rest_stays_plain_http(self, tls_server):
        status, _, body = rest_call(f"http://{tls_server.rest_address}{METRICS_PATH}")
        assert status == 200, body
        assert body.strip(), "empty Prometheus page"

        status, _, body = rest_call(f"http://{tls_server.rest_address}/v1/models/{MODEL_NAME}")
        assert status == 200, body
        check_model_status(body)


# --- 2. mutual TLS ------------------------------------------------------------------


@pytest.fixture(scope="class")
def mtls_server(pki) -> Iterator[serverproc.Server]:
    """gRPC over TLS that requires a client certificate signed by the CA."""
    config = server_ssl_config(pki, "mtls", client_verify=True)
    with serverproc.running_server(
        "mtls",
        (*SERVER_FLAGS, f"--ssl_config_file={config}"),
        credentials=tls_credentials(pki, pki.client),
        channel_options=[("grpc.ssl_target_name_override", "localhost")],
    ) as running:
        yield running


class TestMutualTls:
    """gRPC over TLS that takes only clients with a certificate from the CA."""

    def test_client_with_ca_signed_certificate(self, mtls_server, pki):
        assert predict_over_tls(mtls_server, pki, pki.client) == CLASSES

    def test_client_without_certificate_is_refused(self, mtls_server, pki):
        with grpc.secure_channel(localhost(mtls_server), tls_credentials(pki)) as channel:
            error = predict_error(channel)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error

        assert predict_over_tls(mtls_server, pki, pki.client) == CLASSES

    def test_client_with_rogue_certificate_is_refused(self, mtls_server, pki):
        credentials = tls_credentials(pki, pki.rogue_client)
        with grpc.secure_channel(localhost(mtls_server), credentials) as channel:
            error = predict_error(channel)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error

        assert predict_over_tls(mtls_server, pki, pki.client) == CLASSES


# --- 3. TLS for REST --------------------------------------------------------------


@pytest.fixture(scope="class")
def rest_tls_server(pki) -> Iterator[serverproc.Server]:
    """REST over TLS (``--rest_api_ssl_config_file``); gRPC stays plain."""
    config = server_ssl_config(pki, "rest-tls")
    with serverproc.running_server(
        "rest-tls",
        (*SERVER_FLAGS, f"--rest_api_ssl_config_file={config}"),
        rest_api=True,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def ca_context(pki) -> ssl.SSLContext:
    """A client TLS context that trusts only the test CA."""
    return ssl.create_default_context(cafile=str(pki.ca_path))


class TestRestTls:
    """REST over TLS (``--rest_api_ssl_config_file``), gRPC plain."""

    def test_get_model_status_over_https(self, rest_tls_server, ca_context):
        url = f"https://localhost:{rest_tls_server.rest_port}/v1/models/{MODEL_NAME}"

        status, headers, body = rest_call(url, context=ca_context)

        assert status == 200, body
        assert headers.get_content_type() == "application/json"
        check_model_status(body)

    def test_predict_over_https(self, rest_tls_server, ca_context):
        url = (
            f"https://localhost:{rest_tls_server.rest_port}"
            f"/v1/models/{MODEL_NAME}:predict"
        )

        status, _, body = rest_call(url, predict_json(), context=ca_context)

        assert status == 200, body
        check_predictions(body)

    def test_plain_http_is_refused(self, rest_tls_server, ca_context):
        # The server answers the cleartext request with a TLS alert.
        with pytest.raises((http.client.HTTPException, OSError)):
            rest_call(f"http://{rest_tls_server.rest_address}/v1/models/{MODEL_NAME}")

        url = f"https://localhost:{rest_tls_server.rest_port}/v1/models/{MODEL_NAME}"
        status, _, body = rest_call(url, context=ca_context)
        assert status == 200, body

    def test_grpc_stays_plain(self, rest_tls_server):
        with grpc.insecure_channel(rest_tls_server.address) as channel:
            assert predict_classes(channel) == CLASSES


# --- 4. invalid SSL configs ---------------------------------------------------------


def bad_ssl_config(pki: Pki, case: str) -> Path:
    """The path of an SSL config that the server must refuse, for ``case``."""
    if case == "missing_file":
        return pki.directory / "no-such.ssl.config"
    path = pki.directory / f"bad-{case}.ssl.config"
    if case == "not_text_format":
        path.write_text("this is not an SSLConfig {\n", encoding="ascii")
    elif case == "key_of_another_certificate":
        write_ssl_config(path, server_key=pki.client.key, server_cert=pki.server.cert)
    elif case == "client_verify_without_custom_ca":
        write_ssl_config(
            path,
            server_key=pki.server.key,
            server_cert=pki.server.cert,
            client_verify=True,
        )
    else:
        raise ValueError(case)
    return path


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        pytest.param(case, problem, id=case)
        for case, problem in [
            ("missing_file", ("No such file",)),
            ("not_text_format", ("SSLConfig",)),
            ("key_of_another_certificate", ("server_key", "server_cert")),
            ("client_verify_without_custom_ca", ("client_verify", "custom_ca")),
        ]
    ],
)
def test_bad_ssl_config_is_refused(pki, case: str, problem: tuple[str, ...]):
    path = bad_ssl_config(pki, case)

    stderr = run_expecting_invalid_flag([f"--ssl_config_file={path}"], "ssl_config_file")

    assert f"--ssl_config_file={path}: " in stderr, stderr
    for words in problem:
        assert words in stderr, stderr


# --- 5. bearer token ------------------------------------------------------------------


@pytest.fixture(scope="module")
def token() -> str:
    return f"tok-{secrets.token_urlsafe(24)}"


@pytest.fixture(scope="class")
def token_server(pki, token) -> Iterator[serverproc.Server]:
    """Plain gRPC and REST (with CORS) that require the bearer token.

    It logs at debug level, so that the log check sees the most it can.
    """
    token_file = pki.directory / "token"
    # Surrounding whitespace is not part of the token.
    token_file.write_text(f"  {token}\n", encoding="ascii")
    flags = (
        *SERVER_FLAGS,
        f"--auth_token_file={token_file}",
        "--rest_api_enable_cors_support=true",
    )
    with serverproc.running_server(
        "auth-token", flags, rest_api=True, env={"RUST_LOG": "debug"}
    ) as running:
        yield running


@pytest.fixture(scope="class")
def token_channel(token_server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(token_server.address) as channel:
        yield channel


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


class TestBearerToken:
    """``--auth_token_file`` with plain gRPC and REST."""

    def test_predict_without_token_is_unauthenticated(self, token_channel):
        error = predict_error(token_channel)

        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        assert "bearer token" in error.details(), error

    def test_predict_with_wrong_token_is_unauthenticated(self, token_channel, token):
        error = predict_error(token_channel, metadata=bearer(token[:-1] + "x"))

        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        assert "bearer token" in error.details(), error

    def test_predict_with_token(self, token_channel, token):
        assert predict_classes(token_channel, metadata=bearer(token)) == CLASSES

    def test_health_needs_no_token(self, token_channel):
        assert serverproc.health_check(token_channel, "") == serverproc.SERVING

    def test_rest_predict_without_token_is_unauthorized(self, token_server):
        url = f"http://{token_server.rest_address}/v1/models/{MODEL_NAME}:predict"

        status, headers, body = rest_call(url, predict_json())

        assert status == 401, body
        assert headers["WWW-Authenticate"] == "Bearer"
        answer = json.loads(body)
        assert answer.keys() == {"error"}, body
        assert "bearer token" in answer["error"], body

    def test_rest_get_with_wrong_token_is_unauthorized(self, token_server, token):
        url = f"http://{token_server.rest_address}/v1/models/{MODEL_NAME}"
        headers = {"Authorization": f"Bearer {token}x"}

        status, response_headers, body = rest_call(url, headers=headers)

        assert status == 401, body
        assert response_headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(body).keys() == {"error"}, body

    def test_rest_predict_with_token(self, token_server, token):
        url = f"http://{token_server.rest_address}/v1/models/{MODEL_NAME}:predict"
        headers = {"Authorization": f"Bearer {token}"}

        status, _, body = rest_call(url, predict_json(), headers=headers)

        assert status == 200, body
        check_predictions(body)

    def test_prometheus_page_needs_no_token(self, token_server):
        status, _, body = rest_call(f"http://{token_server.rest_address}{METRICS_PATH}")

        assert status == 200, body
        assert body.strip(), "empty Prometheus page"

    def test_cors_preflight_needs_no_token(self, token_server):
        status, headers, body = cors_preflight(token_server)

        assert status == 200, body
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in headers["Access-Control-Allow-Methods"]

    def test_cors_preflight_allows_the_authorization_header(self, token_server):
        status, headers, body = cors_preflight(token_server)

        assert status == 200, body
        allowed = {
            name.strip().lower()
            for name in headers.get("Access-Control-Allow-Headers", "").split(",")
        }
        assert "authorization" in allowed, headers

    def test_token_is_not_logged(self, token_server, token_channel, token):
        # Calls with the token, and with wrong tokens that contain it.
        near_misses = [f"{token}x", f"x{token}", f"{token} {token}"]
        assert predict_classes(token_channel, metadata=bearer(token)) == CLASSES
        for wrong in near_misses:
            error = predict_error(token_channel, metadata=bearer(wrong))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        url = f"http://{token_server.rest_address}/v1/models/{MODEL_NAME}"
        for sent in [token, *near_misses]:
            status, _, body = rest_call(url, headers={"Authorization": f"Bearer {sent}"})
            assert status == (200 if sent == token else 401), body

        log = token_server.log_path.read_text(encoding="utf-8", errors="replace")
        assert token not in log, serverproc.log_tail(token_server.log_path)


def cors_preflight(server: serverproc.Server) -> tuple[int, http.client.HTTPMessage, bytes]:
    """The preflight a browser sends before a :predict that carries the token."""
    return rest_call(
        f"http://{server.rest_address}/v1/models/{MODEL_NAME}:predict",
        method="OPTIONS",
        headers={
            "Origin": "http://example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


@pytest.mark.parametrize(
    ("contents", "problem"),
    [("", "empty"), (" \n\t\n", "empty")],
    ids=["empty", "whitespace_only"],
)
def test_empty_token_file_is_refused(tmp_path, contents: str, problem: str):
    token_file = tmp_path / "token"
    token_file.write_text(contents, encoding="ascii")

    stderr = run_expecting_invalid_flag([f"--auth_token_file={token_file}"], "auth_token_file")

    assert f"--auth_token_file={token_file}: " in stderr, stderr
    assert problem in stderr, stderr


# --- 6. mutual TLS and a bearer token together ----------------------------------------


@pytest.fixture(scope="class")
def mtls_token_server(pki, token) -> Iterator[serverproc.Server]:
    """gRPC over mutual TLS that also requires the bearer token."""
    token_file = pki.directory / "token-mtls"
    token_file.write_text(token, encoding="ascii")
    config = server_ssl_config(pki, "mtls-token", client_verify=True)
    with serverproc.running_server(
        "mtls-token",
        (*SERVER_FLAGS, f"--ssl_config_file={config}", f"--auth_token_file={token_file}"),
        credentials=tls_credentials(pki, pki.client),
        channel_options=[("grpc.ssl_target_name_override", "localhost")],
        metadata=bearer(token),
    ) as running:
        yield running


class TestMutualTlsAndToken:
    """Mutual TLS and the bearer token on the same gRPC port."""

    def test_predict_with_certificate_and_token(self, mtls_token_server, pki, token):
        classes = predict_over_tls(mtls_token_server, pki, pki.client, bearer(token))
        assert classes == CLASSES

    def test_certificate_without_token_is_unauthenticated(self, mtls_token_server, pki):
        credentials = tls_credentials(pki, pki.client)
        with grpc.secure_channel(localhost(mtls_token_server), credentials) as channel:
            error = predict_error(channel)

        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        assert "bearer token" in error.details(), error

    def test_token_without_certificate_is_refused(self, mtls_token_server, pki, token):
        with grpc.secure_channel(localhost(mtls_token_server), tls_credentials(pki)) as channel:
            error = predict_error(channel, metadata=bearer(token))

        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
