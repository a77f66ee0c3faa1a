"""Keras 3 SavedModels (model_platform "tensorflow") through the server.

``scripts/build_keras_savedmodels.py`` writes small random-weight Keras models
to ``tests/fixtures/savedmodels/``, each exported with ``model.export`` and
with ``tf.saved_model.save``, as ``<fixture>/1/`` plus ``<fixture>.json``: the
SignatureDefs of the ``serve`` MetaGraphDef, an input batch for
``serving_default`` and TensorFlow's own outputs for it. One server loads
every fixture from one model config file (model name = fixture name). For
each fixture:

- Predict on ``serving_default`` with the recorded batch (int32 inputs in
  ``int_val``, float inputs in ``tensor_content``) must return every recorded
  output with the same shape, within rtol 1e-4 / atol 1e-5 of TensorFlow;
- GetModelMetadata (``signature_def``) must return exactly the recorded
  SignatureDefs, ``__saved_model_init_op`` and Keras' duplicate ``serve``
  included: the same keys, method names, and per alias the same tensor name,
  dtype and shape (unknown rank where the JSON says null), since TensorFlow
  Serving returns the MetaGraphDef's signature map as it is stored;
- GetModelStatus must show version 1 AVAILABLE.

A second server starts on a copy of ``mnist_cnn_export`` and then sees a
version 2 whose ``variables/variables.index`` has bytes flipped in the middle
(which breaks the checksum of the table block holding the bundle header).
As in TensorFlow Serving with the default (latest) version policy, version 2
must end with an error that names ``variables.index`` and version 1 must
keep serving.

Fixtures whose JSON has no outputs (the export failed when they were built)
are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import serverproc
from predict_util import RPC_TIMEOUT_S, SIGNATURE_NAME
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

FIXTURES_DIR = serverproc.REPO_ROOT / "tests" / "fixtures" / "savedmodels"
FIXTURES = sorted(path.stem for path in FIXTURES_DIR.glob("*.json"))
VERSION = 1
RTOL = 1e-4
ATOL = 1e-5
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

CORRUPTED_FIXTURE = "mnist_cnn_export"
# How long a new version may take to be picked up and fail to load.
CORRUPTION_WAIT_S = 15.0
POLL_S = 0.1
LIFECYCLE_FLAGS = (
    "--file_system_poll_wait_seconds=1",
    "--max_num_load_retries=1",
    "--load_retry_interval_micros=100000",
    "--shutdown_delay_seconds=0",
)

VersionStatus = get_model_status_pb2.ModelVersionStatus


def expectations(name: str) -> dict:
    return json.loads((FIXTURES_DIR / f"{name}.json").read_text(encoding="utf-8"))


def exported(doc: dict) -> dict:
    """The fixture's expectations, or a skip when its export failed."""
    if "outputs" not in doc:
        pytest.skip(
            f"{doc.get('model')} was not exported with {doc.get('export')}: "
            f"{doc.get('export_error', 'no recorded outputs')}"
        )
    return doc


# --- tensors ---------------------------------------------------------------------


def to_tensor_proto(array: np.ndarray, dtype: str) -> tensor_pb2.TensorProto:
    """``array`` as a TensorProto of the signature's ``dtype`` ("DT_FLOAT", ...).

    Floats go into ``tensor_content`` as little-endian bytes, int32 values
    into ``int_val``.
    """
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype))
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    if dtype == "DT_FLOAT":
        tensor.tensor_content = np.ascontiguousarray(array, dtype="<f4").tobytes()
    elif dtype == "DT_INT32":
        tensor.int_val.extend(int(v) for v in array.ravel())
    else:
        raise AssertionError(f"no encoding for {dtype} inputs")
    return tensor


def from_tensor_proto(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """A DT_FLOAT or DT_INT32 TensorProto as an array, from either encoding."""
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.dtype == types_pb2.DT_FLOAT:
        wire, values = "<f4", tensor.float_val
    elif tensor.dtype == types_pb2.DT_INT32:
        wire, values = "<i4", tensor.int_val
    else:
        raise AssertionError(f"unexpected dtype {types_pb2.DataType.Name(tensor.dtype)}")
    if tensor.tensor_content:
        array = np.frombuffer(tensor.tensor_content, dtype=wire)
    else:
        array = np.asarray(values, dtype=wire)
    return array.reshape(shape)


def recorded_array(entry: dict) -> np.ndarray:
    return np.asarray(entry["values"], dtype=entry["dtype"]).reshape(entry["shape"])


def predict_request(name: str, doc: dict, version: int | None = None) -> predict_pb2.PredictRequest:
    """Predict on serving_default with the fixture's recorded input batch."""
    signature_inputs = doc["signatures"][SIGNATURE_NAME]["inputs"]
    assert sorted(doc["inputs"]) == sorted(signature_inputs)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = SIGNATURE_NAME
    if version is not None:
        request.model_spec.version.value = version
    for alias, entry in doc["inputs"].items():
        array = recorded_array(entry)
        dtype = signature_inputs[alias]["dtype"]
        request.inputs[alias].CopyFrom(to_tensor_proto(array, dtype))
    return request


def check_outputs(name: str, doc: dict, response: predict_pb2.PredictResponse) -> None:
    """Every recorded output, same dtype and shape, close to TensorFlow's values."""
    outputs = {alias: from_tensor_proto(t) for alias, t in response.outputs.items()}
    assert sorted(outputs) == sorted(doc["outputs"]), name
    for alias, entry in doc["outputs"].items():
        want = recorded_array(entry)
        got = outputs[alias]
        assert got.dtype == want.dtype and got.shape == want.shape, (
            f"{name}: output {alias} is {got.dtype}{list(got.shape)}, "
            f"TensorFlow gave {want.dtype}{list(want.shape)}"
        )
        np.testing.assert_allclose(
            got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name}: output {alias}"
        )


def write_model_config(path: Path, models: dict[str, Path]) -> Path:
    """A text-format ModelServerConfig: name -> base path, platform tensorflow."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in models.items():
        config.model_config_list.config.add(
            name=name, base_path=str(base_path), model_platform="tensorflow"
        )
    path.write_text(text_format.MessageToString(config), encoding="utf-8")
    return path


def version_statuses(models, name: str) -> dict[int, VersionStatus]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = models.GetModelStatus(request, timeout=RPC_TIMEOUT_S)
    return {status.version: status for status in response.model_version_status}


# --- every fixture on one server --------------------------------------------------


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """(PredictionService, ModelService) stubs of a server loading every fixture."""
    served = {
        name: FIXTURES_DIR / name for name in FIXTURES if (FIXTURES_DIR / name).is_dir()
    }
    if not served:
        pytest.fail(f"no SavedModel directories under {FIXTURES_DIR}")
    config_path = write_model_config(
        tmp_path_factory.mktemp("savedmodels_config") / "models.config", served
    )
    flags = [
        f"--model_config_file={config_path}",
        # A model that fails to load fails the startup at once, instead of
        # after the default retries (5, a minute apart).
        "--max_num_load_retries=0",
        "--shutdown_delay_seconds=0",
    ]
    with serverproc.running_server("savedmodels", flags) as server:
        with grpc.insecure_channel(server.address) as channel:
            yield (
                prediction_service_pb2_grpc.PredictionServiceStub(channel),
                model_service_pb2_grpc.ModelServiceStub(channel),
            )


@pytest.mark.parametrize("name", FIXTURES)
def test_predict_matches_tensorflow(services, name):
    doc = exported(expectations(name))
    predictions, _ = services

    response = predictions.Predict(predict_request(name, doc), timeout=RPC_TIMEOUT_S)

    assert response.model_spec.name == name
    assert response.model_spec.version.value == VERSION
    # TensorFlow Serving echoes the signature it ran.
    assert response.model_spec.signature_name == SIGNATURE_NAME
    check_outputs(name, doc, response)


@pytest.mark.parametrize("name", FIXTURES)
def test_metadata_lists_the_stored_signatures(services, name):
    doc = exported(expectations(name))
    predictions, _ = services
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = name
    request.metadata_field.append("signature_def")

    response = predictions.GetModelMetadata(request, timeout=RPC_TIMEOUT_S)

    assert response.model_spec.name == name
    assert response.model_spec.version.value == VERSION
    packed = response.metadata["signature_def"]
    assert packed.type_url == SIGNATURE_DEF_MAP_TYPE_URL
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signature_map)

    # TensorFlow Serving returns the MetaGraphDef's whole signature map as
    # stored, including __saved_model_init_op (no inputs; one output of dtype
    # DT_INVALID and unknown rank) and, for model.export, `serve`.
    assert sorted(signature_map.signature_def) == sorted(doc["signatures"])
    for key, want in doc["signatures"].items():
        got = signature_map.signature_def[key]
        assert got.method_name == want["method_name"], key
        for kind in ("inputs", "outputs"):
            infos = getattr(got, kind)
            assert sorted(infos) == sorted(want[kind]), f"{key} {kind}"
            for alias, expected in want[kind].items():
                info = infos[alias]
                where = f"{key} {kind}[{alias!r}]"
                assert info.name == expected["name"], where
                assert types_pb2.DataType.Name(info.dtype) == expected["dtype"], where
                if expected["shape"] is None:
                    assert info.tensor_shape.unknown_rank, where
                    assert not info.tensor_shape.dim, where
                else:
                    assert not info.tensor_shape.unknown_rank, where
                    assert [d.size for d in info.tensor_shape.dim] == expected["shape"], where


@pytest.mark.parametrize("name", FIXTURES)
def test_status_shows_version_1_available(services, name):
    exported(expectations(name))
    _, models = services

    statuses = version_statuses(models, name)

    assert list(statuses) == [VERSION]
    status = statuses[VERSION]
    assert status.state == VersionStatus.AVAILABLE
    assert status.status.error_code == error_codes_pb2.OK
    assert status.status.error_message == ""


# --- a corrupted checkpoint index --------------------------------------------------


def flip_middle_bytes(path: Path, count: int = 8) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - count // 2
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def wait_for_failed_load(models, name: str, version: int, log_path: Path) -> VersionStatus:
    """Poll GetModelStatus until ``version`` has ended with an error."""
    deadline = time.monotonic() + CORRUPTION_WAIT_S
    last = "no status yet"
    while True:
        try:
            statuses = version_statuses(models, name)
        except grpc.RpcError as err:
            last = f"{err.code().name}: {err.details()}"
        else:
            status = statuses.get(version)
            if status is not None:
                if status.state == VersionStatus.END and status.status.error_message:
                    return status
                last = str(status)
            else:
                last = f"versions {sorted(statuses)}"
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"version {version} of {name} did not end with an error within "
                f"{CORRUPTION_WAIT_S:.0f} s (last: {last})\n" + serverproc.log_tail(log_path)
            )
        time.sleep(POLL_S)


def test_corrupted_variables_index_keeps_version_1_serving(tmp_path):
    name = CORRUPTED_FIXTURE
    doc = exported(expectations(name))
    source = FIXTURES_DIR / name / str(VERSION)
    base = tmp_path / name
    shutil.copytree(source, base / "1")
    config_path = write_model_config(tmp_path / "models.config", {name: base})
    flags = [f"--model_config_file={config_path}", *LIFECYCLE_FLAGS]

    with serverproc.running_server("savedmodels-corrupted", flags) as server:
        with grpc.insecure_channel(server.address) as channel:
            predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            models = model_service_pb2_grpc.ModelServiceStub(channel)

            response = predictions.Predict(predict_request(name, doc), timeout=RPC_TIMEOUT_S)
            assert response.model_spec.version.value == 1
            check_outputs(name, doc, response)

            # Publish version 2 in one rename, so no poll sees it half-copied.
            staging = base / "incoming-2"
            shutil.copytree(source, staging)
            flip_middle_bytes(staging / "variables" / "variables.index")
            os.rename(staging, base / "2")

            broken = wait_for_failed_load(models, name, 2, server.log_path)
            # TensorFlow's bundle reader fails with DATA_LOSS "Unable to read
            # file (<dir>/2/variables/variables.index). Perhaps the file is
            # corrupt ...: block checksum mismatch".
            assert "variables.index" in broken.status.error_message, broken
            assert broken.status.error_code != error_codes_pb2.OK, broken

            # The latest-version policy loads 2 before unloading 1, so 1 stays.
            statuses = version_statuses(models, name)
            assert statuses[1].state == VersionStatus.AVAILABLE, statuses
            response = predictions.Predict(predict_request(name, doc), timeout=RPC_TIMEOUT_S)
            assert response.model_spec.version.value == 1
            check_outputs(name, doc, response)
