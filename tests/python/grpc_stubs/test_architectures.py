"""Whole network architectures through the server, checked against onnxruntime.

``scripts/make_arch_models.py`` builds small models of common architectures
(ResNet, MobileNetV2, Inception, a bidirectional-LSTM tagger, a GRU
classifier, a dilated 1-D text CNN, a transformer encoder block, a U-Net,
a VGG with LRN) with random weights. Two servers load them all from one
model config file, one computing on a single thread
(``--tensorflow_intra_op_parallelism=1``) and one on two. For every model the
example batch of the script goes through Predict on both servers; each
output must match onnxruntime within rtol 1e-4 / atol 1e-5, and the two
servers' outputs must be bit-identical.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys

import grpc
import numpy as np
import onnx
import onnxruntime
import pytest
import serverproc
from predict_util import RPC_TIMEOUT_S, SIGNATURE_NAME
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

RTOL = 1e-4
ATOL = 1e-5
THREADS = (1, 2)


def _load_builder():
    path = serverproc.REPO_ROOT / "scripts" / "make_arch_models.py"
    spec = importlib.util.spec_from_file_location("make_arch_models", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


arch = _load_builder()

WIRE_DTYPES = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.int64): types_pb2.DT_INT64,
}
ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: types_pb2.DT_FLOAT,
    onnx.TensorProto.INT64: types_pb2.DT_INT64,
}


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Floats as little-endian ``tensor_content``, int64 in ``int64_val``."""
    tensor = tensor_pb2.TensorProto(dtype=WIRE_DTYPES[array.dtype])
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    if array.dtype == np.float32:
        tensor.tensor_content = np.ascontiguousarray(array, dtype="<f4").tobytes()
    else:
        tensor.int64_val.extend(array.ravel().tolist())
    return tensor


def from_tensor_proto(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """A DT_FLOAT or DT_INT64 TensorProto as an array, from either encoding."""
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.dtype == types_pb2.DT_FLOAT:
        wire, values = "<f4", tensor.float_val
    elif tensor.dtype == types_pb2.DT_INT64:
        wire, values = "<i8", tensor.int64_val
    else:
        raise AssertionError(f"unexpected dtype {types_pb2.DataType.Name(tensor.dtype)}")
    if tensor.tensor_content:
        array = np.frombuffer(tensor.tensor_content, dtype=wire)
    else:
        array = np.asarray(values, dtype=wire)
    return array.reshape(shape)


def onnx_dims(value_info) -> list[int]:
    """Declared dims of a graph input/output; symbolic ones as -1."""
    return [
        dim.dim_value if dim.HasField("dim_value") else -1
        for dim in value_info.type.tensor_type.shape.dim
    ]


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    return arch.write_models(tmp_path_factory.mktemp("arch_models"))


@pytest.fixture(scope="module")
def services(model_paths, tmp_path_factory):
    """Thread count -> PredictionService stub of a server loading every model."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, path in model_paths.items():
        config.model_config_list.config.add(
            name=name, base_path=str(path.parent.parent), model_platform="onnx"
        )
    config_path = tmp_path_factory.mktemp("arch_config") / "models.config"
    config_path.write_text(text_format.MessageToString(config), encoding="utf-8")

    with contextlib.ExitStack() as stack:
        stubs = {}
        for threads in THREADS:
            server = stack.enter_context(
                serverproc.running_server(
                    f"architectures-intra{threads}",
                    [
                        f"--model_config_file={config_path}",
                        f"--tensorflow_intra_op_parallelism={threads}",
                        # no drain period on SIGTERM: nothing is in flight
                        "--shutdown_delay_seconds=0",
                    ],
                )
            )
            channel = stack.enter_context(grpc.insecure_channel(server.address))
            stubs[threads] = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        yield stubs


def reference_outputs(path, inputs) -> dict[str, np.ndarray]:
    """onnxruntime's outputs, running the graph as written (no fusions)."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def predict(stub, name: str, inputs) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for alias, array in inputs.items():
        request.inputs[alias].CopyFrom(to_tensor_proto(array))
    response = stub.Predict(request, timeout=RPC_TIMEOUT_S)
    assert response.model_spec.name == name
    assert response.model_spec.version.value == 1
    return {alias: from_tensor_proto(t) for alias, t in response.outputs.items()}


@pytest.mark.parametrize("name", arch.MODELS)
def test_matches_onnxruntime_on_one_and_two_threads(services, model_paths, name):
    inputs = arch.example_inputs(name)
    expected = reference_outputs(model_paths[name], inputs)

    answers = {threads: predict(stub, name, inputs) for threads, stub in services.items()}

    for threads, outputs in answers.items():
        assert sorted(outputs) == sorted(expected), f"{threads} thread(s)"
        for alias, want in expected.items():
            got = outputs[alias]
            assert got.dtype == want.dtype and got.shape == want.shape, (
                f"{alias} on {threads} thread(s): {got.dtype}{list(got.shape)}, "
                f"onnxruntime {want.dtype}{list(want.shape)}"
            )
            np.testing.assert_allclose(
                got, want, rtol=RTOL, atol=ATOL,
                err_msg=f"{name}: output {alias} on {threads} thread(s)",
            )
    one, two = answers[1], answers[2]
    for alias in expected:
        assert one[alias].tobytes() == two[alias].tobytes(), (
            f"{name}: output {alias} differs between 1 and 2 threads "
            f"(max abs difference {np.max(np.abs(one[alias] - two[alias]))})"
        )


@pytest.mark.parametrize("name", arch.MODELS)
def test_metadata_lists_graph_inputs_and_outputs(services, model_paths, name):
    graph = onnx.load(model_paths[name]).graph
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = name
    request.metadata_field.append("signature_def")

    response = services[1].GetModelMetadata(request, timeout=RPC_TIMEOUT_S)

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    signature = signature_map.signature_def[SIGNATURE_NAME]
    for declared, infos in ((graph.input, signature.inputs), (graph.output, signature.outputs)):
        assert sorted(infos) == sorted(value.name for value in declared)
        for value in declared:
            info = infos[value.name]
            assert info.name == f"{value.name}:0"
            assert info.dtype == ONNX_DTYPES[value.type.tensor_type.elem_type]
            assert [dim.size for dim in info.tensor_shape.dim] == onnx_dims(value)
