"""The server driven by the official TensorFlow Serving client code.

Requests are built with ``tf.make_tensor_proto`` (which fills
``tensor_content``) and answers read with ``tf.make_ndarray``.
"""

from __future__ import annotations

import digits
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

MODEL_NAME = "mnist"
SIGNATURE_NAME = "serving_default"
RPC_TIMEOUT_S = 10.0


def predict(prediction_service, images: np.ndarray) -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = SIGNATURE_NAME
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    response = prediction_service.Predict(request, timeout=RPC_TIMEOUT_S)
    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1
    return tf.make_ndarray(response.outputs["probabilities"])


@pytest.mark.parametrize("path", digits.digit_images(), ids=lambda path: path.stem)
def test_predict_each_digit(prediction_service, path):
    probabilities = predict(prediction_service, digits.load_batch([path]))

    assert probabilities.shape == (1, digits.NUM_CLASSES)
    assert int(probabilities.argmax()) == digits.label_of(path)


def test_predict_all_digits_in_one_batch(prediction_service):
    paths = digits.digit_images()
    assert [digits.label_of(path) for path in paths] == list(range(10))

    probabilities = predict(prediction_service, digits.load_batch(paths))

    assert probabilities.shape == (10, digits.NUM_CLASSES)
    assert probabilities.argmax(axis=1).tolist() == list(range(10))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_get_model_metadata(prediction_service):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL_NAME
    request.metadata_field.append("signature_def")

    response = prediction_service.GetModelMetadata(request, timeout=RPC_TIMEOUT_S)

    assert response.model_spec.version.value == 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    signature = signature_map.signature_def[SIGNATURE_NAME]
    assert signature.method_name == "tensorflow/serving/predict"
    image = signature.inputs["image"]
    assert image.name == "image:0"
    assert tf.dtypes.as_dtype(image.dtype) == tf.float32
    assert tf.TensorShape(image.tensor_shape).as_list() == [None, 28, 28, 1]
    probabilities = signature.outputs["probabilities"]
    assert probabilities.name == "probabilities:0"
    assert tf.dtypes.as_dtype(probabilities.dtype) == tf.float32
    assert tf.TensorShape(probabilities.tensor_shape).as_list() == [None, 10]


def test_get_model_status(model_service):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME

    response = model_service.GetModelStatus(request, timeout=RPC_TIMEOUT_S)

    [status] = response.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == error_codes_pb2.OK
