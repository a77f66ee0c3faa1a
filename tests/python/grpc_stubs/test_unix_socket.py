"""gRPC on a UNIX socket (``--grpc_socket_path``), as TensorFlow Serving serves it.

gRPC clients send the socket's path as the HTTP/2 ``:authority`` of a
``unix:`` target; the server must answer them anyway.  Both the stubs of this
suite (grpc-core) and grpcurl (grpc-go) are tried, with TCP off
(``--port=0``) as in a sidecar deployment.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import digits
import grpc
import pytest
import serverproc
from predict_util import OUTPUT_ALIAS, RPC_TIMEOUT_S, predict_request, to_ndarray
from test_grpcurl import find_grpcurl

START_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def socket_path() -> Iterator[Path]:
    """A server with gRPC on a UNIX socket only; yields the socket's path."""
    with tempfile.TemporaryDirectory(prefix="ferroserve-uds-") as tmp:
        path = Path(tmp) / "serving.sock"
        serverproc.LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = serverproc.LOG_DIR / "unix-socket-server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(serverproc.BINARY), "--port=0", f"--grpc_socket_path={path}",
                 *serverproc.MNIST_FLAGS, "--shutdown_delay_seconds=0"],
                stdout=log, stderr=subprocess.STDOUT, cwd=serverproc.REPO_ROOT,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not path.exists():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the socket did not appear"
                time.sleep(0.05)
            yield path
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=serverproc.SHUTDOWN_TIMEOUT_S) == 0
        assert not path.exists(), "the socket is removed at exit"


@pytest.mark.parametrize("form", ["unix:{}", "unix://{}"])
def test_stubs_predict_over_the_socket(socket_path: Path, form: str):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(form.format(socket_path)) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        paths = digits.digit_images()
        request = predict_request(digits.load_batch(paths))
        # Metadata near gRPC's default 8 KiB limit, re-encoded without
        # Huffman coding by the server's :authority fix.
        metadata = [("x-padding", "p" * 7000)]
        for _ in range(3):
            response = stub.Predict(request, timeout=RPC_TIMEOUT_S, metadata=metadata)
            probabilities = to_ndarray(response.outputs[OUTPUT_ALIAS])
            assert probabilities.argmax(axis=1).tolist() == [digits.label_of(p) for p in paths]


def test_health_over_the_socket(socket_path: Path):
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=RPC_TIMEOUT_S) == bytes([0x08, serverproc.SERVING])


def test_grpcurl_over_the_socket(socket_path: Path):
    grpcurl = str(find_grpcurl())
    listed = subprocess.run([grpcurl, "-plaintext", "-unix", str(socket_path), "list"],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "tensorflow.serving.PredictionService" in listed.stdout.split()
    status = subprocess.run(
        [grpcurl, "-plaintext", "-unix", "-d", '{"model_spec": {"name": "mnist"}}', str(socket_path),
         "tensorflow.serving.ModelService/GetModelStatus"],
        capture_output=True, text=True, timeout=30,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["model_version_status"][0]["state"] == "AVAILABLE"
