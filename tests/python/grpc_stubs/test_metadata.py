"""GetModelMetadata (PredictionService) and GetModelStatus (ModelService)."""

from __future__ import annotations

from predict_util import (
    INPUT_ALIAS,
    MODEL_NAME,
    OUTPUT_ALIAS,
    RPC_TIMEOUT_S,
    SIGNATURE_NAME,
)
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


def shape_of(tensor_info) -> list[int]:
    assert not tensor_info.tensor_shape.unknown_rank
    return [dim.size for dim in tensor_info.tensor_shape.dim]


def test_get_model_metadata_signature_def(prediction_service):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL_NAME
    request.metadata_field.append("signature_def")

    response = prediction_service.GetModelMetadata(request, timeout=RPC_TIMEOUT_S)

    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1
    assert list(response.metadata) == ["signature_def"]
    packed = response.metadata["signature_def"]
    assert packed.type_url == SIGNATURE_DEF_MAP_TYPE_URL
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signature_map)

    assert SIGNATURE_NAME in signature_map.signature_def
    signature = signature_map.signature_def[SIGNATURE_NAME]
    assert signature.method_name == "tensorflow/serving/predict"

    assert list(signature.inputs) == [INPUT_ALIAS]
    image = signature.inputs[INPUT_ALIAS]
    assert image.name == "image:0"
    assert image.dtype == types_pb2.DT_FLOAT
    assert shape_of(image) == [-1, 28, 28, 1]

    assert list(signature.outputs) == [OUTPUT_ALIAS]
    probabilities = signature.outputs[OUTPUT_ALIAS]
    assert probabilities.name == "probabilities:0"
    assert probabilities.dtype == types_pb2.DT_FLOAT
    assert shape_of(probabilities) == [-1, 10]


def test_get_model_status(model_service):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME

    response = model_service.GetModelStatus(request, timeout=RPC_TIMEOUT_S)

    assert len(response.model_version_status) == 1
    status = response.model_version_status[0]
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == error_codes_pb2.OK
    assert status.status.error_message == ""
