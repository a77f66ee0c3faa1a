"""Build Predict requests and read tensors with the stubs generated from proto/."""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

MODEL_NAME = "mnist"
SIGNATURE_NAME = "serving_default"
INPUT_ALIAS = "image"
OUTPUT_ALIAS = "probabilities"
RPC_TIMEOUT_S = 10.0


def float_tensor(array: np.ndarray, *, as_content: bool) -> tensor_pb2.TensorProto:
    """A DT_FLOAT TensorProto holding ``array``.

    With ``as_content`` the values go into ``tensor_content`` as little-endian
    bytes (what ``tf.make_tensor_proto`` does); otherwise into ``float_val``.
    """
    values = np.ascontiguousarray(array, dtype="<f4")
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in values.shape:
        tensor.tensor_shape.dim.add(size=size)
    if as_content:
        tensor.tensor_content = values.tobytes()
    else:
        tensor.float_val.extend(values.ravel().tolist())
    return tensor


def to_ndarray(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """The values of a DT_FLOAT TensorProto, from either encoding."""
    assert tensor.dtype == types_pb2.DT_FLOAT, types_pb2.DataType.Name(tensor.dtype)
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype="<f4")
    else:
        values = np.asarray(tensor.float_val, dtype=np.float32)
    return values.reshape(shape)


def predict_request(
    images: np.ndarray,
    *,
    as_content: bool = False,
    model_name: str = MODEL_NAME,
    version: int | None = None,
    signature_name: str | None = None,
) -> predict_pb2.PredictRequest:
    """A PredictRequest feeding ``images`` ([N, 28, 28, 1] float32) to ``image``."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    if version is not None:
        request.model_spec.version.value = version
    if signature_name is not None:
        request.model_spec.signature_name = signature_name
    request.inputs[INPUT_ALIAS].CopyFrom(float_tensor(images, as_content=as_content))
    return request
