"""SavedModels (model_platform "tensorflow") through the server.

Three fixture directories hold small random-weight models exported as
SavedModels, each as ``<fixture>/1/`` plus ``<fixture>.json`` (the
SignatureDefs of the ``serve`` MetaGraphDef, an input batch for
``serving_default`` and TensorFlow's own outputs for it):

- ``tests/fixtures/savedmodels/`` (``scripts/build_keras_savedmodels.py``):
  Keras 3 models, each exported with ``model.export`` and with
  ``tf.saved_model.save``;
- ``tests/fixtures/savedmodels_zoo/`` (``scripts/build_keras_zoo.py``): more
  Keras 3 exports and tf_keras (Keras 2) saves, with float32, float64, int32,
  int64 and uint8 inputs and float32, float64 and int32 outputs;
- ``tests/fixtures/savedmodels_tf1/`` (``scripts/build_tf1_savedmodels.py``):
  TensorFlow 1 graphs whose variables a top-level saver restores, the kind
  older deployments serve.

Fixture names are unique across the three. One server loads every fixture
from one model config file (model name = fixture name). Requests and answers
go through the official ``tensorflow-serving-api`` stubs, with tensors built
by ``tf.make_tensor_proto`` (in the signature's dtype) and read by
``tf.make_ndarray``, as a TensorFlow Serving user does. For each fixture:

- Predict on ``serving_default`` with the recorded batch must return every
  recorded output with the same dtype and shape: float outputs within
  rtol 1e-4 / atol 1e-5 of TensorFlow, integer outputs exactly equal;
- GetModelMetadata (``signature_def``) must return exactly the recorded
  SignatureDefs, ``__saved_model_init_op`` included (and the duplicate
  ``serve`` that ``model.export`` writes): the same keys, method names, and
  per alias the same tensor name, dtype and shape (unknown rank where the
  JSON says null), since TensorFlow Serving returns the MetaGraphDef's
  signature map as it is stored;
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
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

FIXTURE_DIRS = (
    serverproc.REPO_ROOT / "tests" / "fixtures" / "savedmodels",
    serverproc.REPO_ROOT / "tests" / "fixtures" / "savedmodels_zoo",
    serverproc.REPO_ROOT / "tests" / "fixtures" / "savedmodels_tf1",
)


def _find_fixtures() -> dict[str, Path]:
    """Fixture name -> the directory holding ``<name>.json`` and ``<name>/``."""
    found: dict[str, Path] = {}
    for directory in FIXTURE_DIRS:
        for path in sorted(directory.glob("*.json")):
            if path.stem in found:
                raise AssertionError(
                    f"fixture {path.stem} is in both {found[path.stem]} and {directory}"
                )
            found[path.stem] = directory
    return dict(sorted(found.items()))


FIXTURE_HOMES = _find_fixtures()
FIXTURES = list(FIXTURE_HOMES)
SIGNATURE_NAME = "serving_default"
VERSION = 1
RPC_TIMEOUT_S = 10.0
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


def model_dir(name: str) -> Path:
    """The fixture's base path (holding version ``1/``)."""
    return FIXTURE_HOMES[name] / name


def expectations(name: str) -> dict:
    return json.loads((FIXTURE_HOMES[name] / f"{name}.json").read_text(encoding="utf-8"))


def exported(doc: dict) -> dict:
    """The fixture's expectations, or a skip when its export failed."""
    if "outputs" not in doc:
        pytest.skip(
            f"{doc.get('model')} was not exported with {doc.get('export')}: "
            f"{doc.get('export_error', 'no recorded outputs')}"
        )
    return doc


# --- tensors ---------------------------------------------------------------------


def recorded_array(entry: dict) -> np.ndarray:
    """The recorded values; strings as bytes (numpy's ``object`` arrays, as
    ``tf.make_ndarray`` returns them)."""
    if entry["dtype"] == "string":
        values = [v.encode() for v in entry["values"]]
        return np.asarray(values, dtype=object).reshape(entry["shape"])
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
        dtype = tf.dtypes.as_dtype(types_pb2.DataType.Value(signature_inputs[alias]["dtype"]))
        array = recorded_array(entry)
        assert array.dtype == dtype.as_numpy_dtype, (
            f"{name}: input {alias} is recorded as {array.dtype}, the signature says {dtype.name}"
        )
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
    return request


def check_outputs(name: str, doc: dict, response: predict_pb2.PredictResponse) -> None:
    """Every recorded output, same dtype and shape; floats close to TensorFlow's
    values, integers equal to them."""
    assert sorted(response.outputs) == sorted(doc["outputs"]), name
    for alias, entry in doc["outputs"].items():
        want = recorded_array(entry)
        got = tf.make_ndarray(response.outputs[alias])
        assert got.dtype == want.dtype and got.shape == want.shape, (
            f"{name}: output {alias} is {got.dtype}{list(got.shape)}, "
            f"TensorFlow gave {want.dtype}{list(want.shape)}"
        )
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(
                got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name}: output {alias}"
            )
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{name}: output {alias}")


def write_model_config(path: Path, models: dict[str, Path]) -> Path:
    """A text-format ModelServerConfig: name -> base path, platform tensorflow."""
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
    served = {name: model_dir(name) for name in FIXTURES if model_dir(name).is_dir()}
    if not served:
        pytest.fail(f"no SavedModel directories under {', '.join(map(str, FIXTURE_DIRS))}")
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
    source = model_dir(name) / str(VERSION)
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
