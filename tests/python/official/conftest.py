"""Fixtures for the suite that uses TensorFlow's own client packages.

``tensorflow_serving.apis`` (from the tensorflow-serving-api wheel) supplies
the stubs and ``tensorflow`` the tensor conversions, exactly as a TensorFlow
Serving user would call them.  TensorFlow is imported once, when the test
modules are collected; TF_CPP_MIN_LOG_LEVEL=2 keeps its C++ logging quiet.
One ferroserve process serves the whole session, with the models of
``SERVED_MODELS`` listed in a text-format ModelServerConfig.  (The lifecycle
tests start servers of their own.)
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
import serverproc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Model name -> base path (the directory holding the numbered versions).
SERVED_MODELS = {
    "mnist": serverproc.REPO_ROOT / serverproc.MODEL_BASE_PATH,
    "iris": serverproc.REPO_ROOT / "tests" / "fixtures" / "models" / "iris",
}


@pytest.fixture(scope="session")
def model_config_file(tmp_path_factory) -> Path:
    """A ModelServerConfig file that lists every model of ``SERVED_MODELS``."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in SERVED_MODELS.items():
        config.model_config_list.config.add(
            name=name, base_path=str(base_path), model_platform="onnx"
        )
    path = tmp_path_factory.mktemp("official") / "models.config"
    path.write_text(text_format.MessageToString(config), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def server(model_config_file):
    flags = [f"--model_config_file={model_config_file}"]
    with serverproc.running_server("official", flags) as running:
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
