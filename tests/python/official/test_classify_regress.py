"""Classify, Regress and MultiInference through the official client.

Requests carry ``tf.train.Example`` protos: the server reads each model input
from the feature of the same name and stacks the examples along dim 0.  The
iris model (tests/fixtures/models/iris) has inputs ``sepal`` and ``petal``
(float [N, 2]) and outputs ``scores`` (float [N, 3], softmax over the classes
named in its labels.txt) and ``outputs`` (float [N, 1]);
tests/fixtures/iris_reference.json holds onnxruntime's answers for five
flowers.  The mnist model has no labels.txt, so its classes are "0".."9".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence

import grpc
import numpy as np
import pytest
import serverproc
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    regression_pb2,
)

RPC_TIMEOUT_S = 10.0
SIGNATURE_NAME = "serving_default"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"
# The project's tolerance for the mnist model; the iris answers are compared
# with an absolute tolerance only.
MNIST_RTOL = 1e-4
IRIS_ATOL = 1e-5

FIXTURES = serverproc.REPO_ROOT / "tests" / "fixtures"
IRIS_REFERENCE = json.loads((FIXTURES / "iris_reference.json").read_text())
IRIS_LABELS = IRIS_REFERENCE["labels"]
FLOWERS = IRIS_REFERENCE["cases"]
# One digit image per case; the batch case has no single class.
DIGITS = [
    case
    for case in json.loads((FIXTURES / "mnist_reference.json").read_text())["cases"]
    if case["class"] is not None
]
MNIST_LABELS = [str(digit) for digit in range(10)]

# The request type of each RPC, by its name on the PredictionService stub.
REQUEST_TYPES = {
    "Classify": classification_pb2.ClassificationRequest,
    "Regress": regression_pb2.RegressionRequest,
}

FeatureValues = Sequence[float] | tf.train.Feature


# --- building requests --------------------------------------------------------


def float_feature(values: Iterable[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def int64_feature(values: Iterable[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def example(features: Mapping[str, FeatureValues]) -> tf.train.Example:
    """An Example whose float lists are given as sequences of numbers."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                name: value
                if isinstance(value, tf.train.Feature)
                else float_feature(value)
                for name, value in features.items()
            }
        )
    )


def flower(case: Mapping, *only: str, **overrides: FeatureValues) -> tf.train.Example:
    """A reference flower as an Example.

    ``only`` keeps just the named features (default: sepal and petal) and
    ``overrides`` replaces or adds features.
    """
    names = only or ("sepal", "petal")
    return example({**{name: case[name] for name in names}, **overrides})


def example_input(
    examples: Iterable[tf.train.Example], context: tf.train.Example | None = None
) -> input_pb2.Input:
    """An Input with an example_list, or an example_list_with_context."""
    request_input = input_pb2.Input()
    if context is None:
        request_input.example_list.SetInParent()
        request_input.example_list.examples.extend(examples)
    else:
        request_input.example_list_with_context.context.CopyFrom(context)
        request_input.example_list_with_context.examples.extend(examples)
    return request_input


def flowers_input(cases: Iterable[Mapping] = FLOWERS) -> input_pb2.Input:
    return example_input(flower(case) for case in cases)


def digits_input(cases: Iterable[Mapping] = DIGITS) -> input_pb2.Input:
    return example_input(example({"image": case["input"]}) for case in cases)


def inference_request(
    method: str,
    request_input: input_pb2.Input | None,
    model: str | None = "iris",
    signature: str = "",
):
    """A Classify or Regress request; ``model=None`` leaves out the ModelSpec."""
    request = REQUEST_TYPES[method]()
    if model is not None:
        request.model_spec.name = model
        request.model_spec.signature_name = signature
    if request_input is not None:
        request.input.CopyFrom(request_input)
    return request


def multi_inference_request(
    tasks: Iterable[tuple[str, str] | tuple[str, str, str]],
    request_input: input_pb2.Input,
) -> inference_pb2.MultiInferenceRequest:
    """``tasks`` holds (model, method_name) or (model, method_name, signature)."""
    request = inference_pb2.MultiInferenceRequest(input=request_input)
    for model, method_name, *signature in tasks:
        task = request.tasks.add(method_name=method_name)
        task.model_spec.name = model
        task.model_spec.signature_name = "".join(signature)
    return request


# --- calling the server and checking answers -----------------------------------


def call(prediction_service, method: str, request):
    return getattr(prediction_service, method)(request, timeout=RPC_TIMEOUT_S)


def classify(prediction_service, request_input, model="iris", signature=""):
    request = inference_request("Classify", request_input, model, signature)
    response = call(prediction_service, "Classify", request)
    assert_model_spec(response.model_spec, model)
    return response.result


def regress(prediction_service, request_input, model="iris", signature=""):
    request = inference_request("Regress", request_input, model, signature)
    response = call(prediction_service, "Regress", request)
    assert_model_spec(response.model_spec, model)
    return response.result


def assert_model_spec(model_spec, name: str) -> None:
    """The spec of an answer: the model, its only signature and version 1."""
    assert model_spec.name == name
    assert model_spec.signature_name == SIGNATURE_NAME
    assert model_spec.version.value == 1


def class_scores(result, labels: Sequence[str]) -> np.ndarray:
    """Scores [examples, classes] of a ClassificationResult.

    Checks that every example lists one class per label, in label order.
    """
    for classifications in result.classifications:
        assert [c.label for c in classifications.classes] == list(labels)
    return np.array(
        [
            [c.score for c in classifications.classes]
            for classifications in result.classifications
        ]
    )


def assert_flowers_classified(result, cases: Sequence[Mapping]) -> None:
    scores = class_scores(result, IRIS_LABELS)
    expected = np.array([case["scores"] for case in cases])
    assert scores.shape == expected.shape
    np.testing.assert_allclose(scores, expected, rtol=0, atol=IRIS_ATOL)
    assert scores.argmax(axis=1).tolist() == [case["class"] for case in cases]


def assert_flowers_regressed(result, cases: Sequence[Mapping]) -> None:
    values = np.array([regression.value for regression in result.regressions])
    expected = np.array([case["output"] for case in cases])
    assert values.shape == expected.shape
    np.testing.assert_allclose(values, expected, rtol=0, atol=IRIS_ATOL)


def assert_rpc_error(
    call_server: Callable[[], object],
    code: grpc.StatusCode,
    details: str | None = None,
    contains: Sequence[str] = (),
) -> None:
    """The call fails with ``code``, and its details are exactly ``details``
    (when given) and contain each string of ``contains``."""
    with pytest.raises(grpc.RpcError) as info:
        call_server()
    error = info.value
    assert error.code() == code, error.details()
    if details is not None:
        assert error.details() == details
    for text in contains:
        assert text in error.details()


# --- Classify -------------------------------------------------------------------


def test_classify_flowers(prediction_service):
    result = classify(prediction_service, flowers_input())

    assert_flowers_classified(result, FLOWERS)


def test_classify_with_named_signature(prediction_service):
    result = classify(
        prediction_service, flowers_input(FLOWERS[:1]), signature=SIGNATURE_NAME
    )

    assert_flowers_classified(result, FLOWERS[:1])


def test_classify_one_flower_at_a_time(prediction_service):
    for case in FLOWERS:
        assert_flowers_classified(
            classify(prediction_service, flowers_input([case])), [case]
        )


def test_int64_values_feed_a_float_input(prediction_service):
    [case] = [case for case in FLOWERS if case["sepal"] == [5.0, 3.0]]
    sepal = int64_feature([5, 3])

    result = classify(prediction_service, example_input([flower(case, sepal=sepal)]))

    assert_flowers_classified(result, [case])


def test_context_features_apply_to_every_example(prediction_service):
    first, second = FLOWERS[:2]
    context = flower(first, "sepal")
    examples = [flower(first, "petal"), flower(second)]

    result = classify(prediction_service, example_input(examples, context))

    # The second example's own sepal wins over the context's.
    assert_flowers_classified(result, [first, second])


def test_classify_digits(prediction_service):
    result = classify(prediction_service, digits_input(), model="mnist")

    scores = class_scores(result, MNIST_LABELS)
    assert scores.argmax(axis=1).tolist() == [case["class"] for case in DIGITS]
    expected = np.array([case["probabilities"] for case in DIGITS])
    np.testing.assert_allclose(scores, expected, rtol=MNIST_RTOL, atol=IRIS_ATOL)


# --- Regress ----------------------------------------------------------------------


def test_regress_flowers(prediction_service):
    result = regress(prediction_service, flowers_input())

    assert_flowers_regressed(result, FLOWERS)


def test_regress_with_context(prediction_service):
    first, second = FLOWERS[:2]
    context = flower(first, "sepal")
    examples = [flower(first, "petal"), flower(second)]

    result = regress(prediction_service, example_input(examples, context))

    assert_flowers_regressed(result, [first, second])


# --- MultiInference ---------------------------------------------------------------


def test_multi_inference_classifies_and_regresses(prediction_service):
    request = multi_inference_request(
        [("iris", CLASSIFY), ("iris", REGRESS, SIGNATURE_NAME)], flowers_input()
    )

    response = call(prediction_service, "MultiInference", request)

    classified, regressed = response.results
    assert classified.WhichOneof("result") == "classification_result"
    assert regressed.WhichOneof("result") == "regression_result"
    for result in response.results:
        assert_model_spec(result.model_spec, "iris")
    assert_flowers_classified(classified.classification_result, FLOWERS)
    assert_flowers_regressed(regressed.regression_result, FLOWERS)


def test_multi_inference_keeps_task_order(prediction_service):
    request = multi_inference_request(
        [("iris", REGRESS), ("iris", CLASSIFY)], flowers_input(FLOWERS[:2])
    )

    response = call(prediction_service, "MultiInference", request)

    regressed, classified = response.results
    assert_flowers_regressed(regressed.regression_result, FLOWERS[:2])
    assert_flowers_classified(classified.classification_result, FLOWERS[:2])


# --- GetModelMetadata ---------------------------------------------------------------


def signature_defs(prediction_service, model: str):
    """The model's SignatureDefMap, from GetModelMetadata."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    response = prediction_service.GetModelMetadata(request, timeout=RPC_TIMEOUT_S)
    assert response.model_spec.name == model
    assert response.model_spec.version.value == 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    return signature_map.signature_def


def tensor_infos(tensors) -> dict[str, tuple[str, tf.dtypes.DType, list]]:
    """name -> (TensorInfo.name, dtype, dims) of a signature's inputs or outputs."""
    return {
        alias: (
            info.name,
            tf.dtypes.as_dtype(info.dtype),
            [dim.size for dim in info.tensor_shape.dim],
        )
        for alias, info in tensors.items()
    }


def test_iris_metadata(prediction_service):
    signatures = signature_defs(prediction_service, "iris")

    assert list(signatures) == [SIGNATURE_NAME]
    signature = signatures[SIGNATURE_NAME]
    assert signature.method_name == PREDICT
    assert tensor_infos(signature.inputs) == {
        "sepal": ("sepal:0", tf.float32, [-1, 2]),
        "petal": ("petal:0", tf.float32, [-1, 2]),
    }
    assert tensor_infos(signature.outputs) == {
        "scores": ("scores:0", tf.float32, [-1, 3]),
        "outputs": ("outputs:0", tf.float32, [-1, 1]),
    }


# --- errors -------------------------------------------------------------------------

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", list(REQUEST_TYPES))
@pytest.mark.parametrize(
    ("arguments", "code", "details", "contains"),
    [
        ((example_input([]),), INVALID, "Input is empty.", ()),
        ((None,), INVALID, "Input is empty.", ()),
        ((flowers_input(), None), INVALID, "Missing ModelSpec", ()),
        (
            (flowers_input(), "nope"),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
            (),
        ),
        (
            (flowers_input(), "iris", "nope"),
            INVALID,
            "No signature was found with the name: nope",
            (),
        ),
        (
            (example_input([flower(FLOWERS[0]), flower(FLOWERS[1], "sepal")]),),
            INVALID,
            None,
            ("petal", "could not be found"),
        ),
        (
            (example_input([flower(FLOWERS[0], petal=[1.0, 2.0, 3.0])]),),
            INVALID,
            None,
            ("petal",),
        ),
    ],
    ids=[
        "empty-example-list",
        "no-input",
        "no-model-spec",
        "unknown-model",
        "unknown-signature",
        "missing-feature",
        "wrong-number-of-values",
    ],
)
def test_invalid_request(
    prediction_service, method, arguments, code, details, contains
):
    request = inference_request(method, *arguments)

    assert_rpc_error(
        lambda: call(prediction_service, method, request), code, details, contains
    )


def test_regress_needs_a_single_value_per_example(prediction_service):
    request = inference_request("Regress", digits_input(DIGITS[:1]), "mnist")

    assert_rpc_error(
        lambda: call(prediction_service, "Regress", request),
        INVALID,
        contains=("probabilities",),
    )


@pytest.mark.parametrize(
    ("tasks", "code", "details"),
    [
        (
            [("iris", CLASSIFY), ("mnist", REGRESS)],
            INVALID,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            [("iris", CLASSIFY, SIGNATURE_NAME), ("iris", CLASSIFY)],
            INVALID,
            "Duplicate evaluation of signature: serving_default",
        ),
        (
            [("iris", PREDICT)],
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            [("iris", CLASSIFY, "nope")],
            INVALID,
            "Requested signature not found in model graph: nope",
        ),
        (
            [("iris", CLASSIFY), ("", REGRESS)],
            INVALID,
            "Found ModelSpec with an empty model name.",
        ),
    ],
    ids=[
        "two-models",
        "duplicate-signature",
        "predict-method",
        "unknown-signature",
        "empty-model-name",
    ],
)
def test_invalid_multi_inference(prediction_service, tasks, code, details):
    request = multi_inference_request(tasks, flowers_input())

    assert_rpc_error(
        lambda: call(prediction_service, "MultiInference", request), code, details
    )
