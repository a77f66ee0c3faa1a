"""Fixtures for the suite that uses TensorFlow's own client packages.

``tensorflow_serving.apis`` (from the tensorflow-serving-api wheel) supplies
the stubs and ``tensorflow`` the tensor conversions, exactly as a TensorFlow
Serving user would call them.  TensorFlow is imported once, when the test
modules are collected; TF_CPP_MIN_LOG_LEVEL=2 keeps its C++ logging quiet.
One ferroserve process serves the whole session.
"""

from __future__ import annotations

import os

import grpc
import pytest
import serverproc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def server():
    with serverproc.running_server("official") as running:
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
