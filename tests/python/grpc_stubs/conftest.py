"""Fixtures for the suite that talks to ferroserve through stubs built from proto/.

At configuration time every .proto file of TensorFlow Serving's API under
``proto/`` is compiled with ``grpc_tools.protoc`` into a temporary directory,
which is put first on ``sys.path``; test modules then import
``tensorflow_serving.apis.*_pb2`` and ``tensorflow.core.framework.*_pb2`` from
there.  One ferroserve process serves the whole session.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import grpc
import pytest
import serverproc

PROTO_ROOT = serverproc.REPO_ROOT / "proto"
PROTO_DIRS = (
    "tensorflow_serving/apis",
    "tensorflow_serving/config",
    "tensorflow/core/framework",
    "tensorflow/core/example",
    "tensorflow/core/protobuf",
    "xla",
)


def _proto_files() -> list[str]:
    files = sorted(
        path.relative_to(PROTO_ROOT).as_posix()
        for directory in PROTO_DIRS
        for path in (PROTO_ROOT / directory).rglob("*.proto")
    )
    if not files:
        raise pytest.UsageError(f"no .proto files found under {PROTO_ROOT}")
    return files


def _compile_stubs(out_dir: Path) -> None:
    well_known_types = resources.files("grpc_tools") / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known_types}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *_proto_files(),
    ]
    result = subprocess.run(
        command,
        cwd=PROTO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise pytest.UsageError(
            f"grpc_tools.protoc failed with status {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )


def pytest_configure(config: pytest.Config) -> None:
    stubs_dir = Path(tempfile.mkdtemp(prefix="ferroserve-stubs-"))
    config.add_cleanup(lambda: shutil.rmtree(stubs_dir, ignore_errors=True))
    _compile_stubs(stubs_dir)
    sys.path.insert(0, str(stubs_dir))


@pytest.fixture(scope="session")
def server():
    with serverproc.running_server("grpc_stubs") as running:
        yield running


@pytest.fixture(scope="session")
def channel(server):
    with grpc.insecure_channel(server.address) as open_channel:
        yield open_channel


@pytest.fixture(scope="session")
def prediction_service(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="session")
def model_service(channel):
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceStub(channel)
