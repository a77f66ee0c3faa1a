"""Error codes and messages, which must match TensorFlow Serving's exactly.

The last test checks that the server still answers Predict after all of them.
"""

from __future__ import annotations

import digits
import grpc
import numpy as np
import pytest
from predict_util import (
    INPUT_ALIAS,
    MODEL_NAME,
    OUTPUT_ALIAS,
    RPC_TIMEOUT_S,
    predict_request,
    to_ndarray,
)
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import classification_pb2

SEVEN = digits.DIGITS_DIR / "7.png"


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=RPC_TIMEOUT_S)
    return caught.value


def test_unknown_model_is_not_found(prediction_service):
    request = predict_request(digits.load_batch([SEVEN]), model_name="nope")

    error = rpc_error(prediction_service.Predict, request)

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"


def test_unknown_version_is_not_found(prediction_service):
    request = predict_request(digits.load_batch([SEVEN]), version=7)

    error = rpc_error(prediction_service.Predict, request)

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(mnist, 7)"


def test_wrong_input_dtype_is_invalid_argument(prediction_service):
    request = predict_request(digits.load_batch([SEVEN]))
    wrong = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32)
    for size in (1, 28, 28, 1):
        wrong.tensor_shape.dim.add(size=size)
    wrong.int_val.extend([0] * 28 * 28)
    request.inputs[INPUT_ALIAS].CopyFrom(wrong)

    error = rpc_error(prediction_service.Predict, request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert INPUT_ALIAS in error.details()


def test_classify_without_examples_is_refused(prediction_service):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL_NAME

    error = rpc_error(prediction_service.Classify, request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Input is empty."


def test_predict_still_works_after_errors(prediction_service):
    response = prediction_service.Predict(
        predict_request(digits.load_batch([SEVEN])), timeout=RPC_TIMEOUT_S
    )

    probabilities = to_ndarray(response.outputs[OUTPUT_ALIAS])
    assert int(np.argmax(probabilities)) == 7
