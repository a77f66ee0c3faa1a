"""PredictionService/Predict on the bundled mnist model with the committed digits."""

from __future__ import annotations

import digits
import numpy as np
import pytest
from predict_util import (
    MODEL_NAME,
    OUTPUT_ALIAS,
    RPC_TIMEOUT_S,
    SIGNATURE_NAME,
    predict_request,
    to_ndarray,
)

DIGIT_IMAGES = digits.digit_images()


def check_probabilities(probabilities: np.ndarray, labels: list[int]) -> None:
    assert probabilities.shape == (len(labels), digits.NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert probabilities.argmax(axis=1).tolist() == labels


def test_every_digit_has_an_image():
    assert [path.name for path in DIGIT_IMAGES] == [f"{d}.png" for d in range(10)]


@pytest.mark.parametrize(
    "as_content", [False, True], ids=["float_val", "tensor_content"]
)
@pytest.mark.parametrize("path", DIGIT_IMAGES, ids=lambda path: path.stem)
def test_predict_single_digit(prediction_service, path, as_content):
    request = predict_request(digits.load_batch([path]), as_content=as_content)

    response = prediction_service.Predict(request, timeout=RPC_TIMEOUT_S)

    assert list(response.outputs) == [OUTPUT_ALIAS]
    check_probabilities(
        to_ndarray(response.outputs[OUTPUT_ALIAS]), [digits.label_of(path)]
    )
    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == SIGNATURE_NAME


def test_predict_with_explicit_version_and_signature(prediction_service):
    path = digits.DIGITS_DIR / "7.png"
    request = predict_request(
        digits.load_batch([path]), version=1, signature_name=SIGNATURE_NAME
    )

    response = prediction_service.Predict(request, timeout=RPC_TIMEOUT_S)

    check_probabilities(
        to_ndarray(response.outputs[OUTPUT_ALIAS]), [digits.label_of(path)]
    )
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == SIGNATURE_NAME


def test_predict_batch_of_three(prediction_service):
    paths = [digits.DIGITS_DIR / f"{digit}.png" for digit in (3, 1, 4)]
    request = predict_request(digits.load_batch(paths))

    response = prediction_service.Predict(request, timeout=RPC_TIMEOUT_S)

    output = response.outputs[OUTPUT_ALIAS]
    assert [dim.size for dim in output.tensor_shape.dim] == [3, digits.NUM_CLASSES]
    check_probabilities(to_ndarray(output), [digits.label_of(path) for path in paths])
