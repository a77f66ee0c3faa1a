"""Hostile requests: malformed, oversized and adversarial input on both APIs.

One server, with gRPC and REST on loopback, takes every case in this module.
Each case checks the answer's code and that its message names the problem;
after each case an autouse fixture checks that the process is still running
and still answers a normal Predict correctly, over gRPC and over REST. The
last test checks that the process is still alive, that its log shows no
panic, and that its resident memory stayed bounded.

Memory is read from ``/proc/<pid>/status``: ``VmRSS`` (resident now) and
``VmHWM`` (peak resident). To bound the peak of one case, the peak is reset
first (writing ``5`` to ``/proc/<pid>/clear_refs``) and VmRSS is also
sampled every few milliseconds while the case runs.

The bounds come from ``deploy/kubernetes/deployment.yaml``, which gives the
server a memory limit of 1 GiB: a case that makes the process grow past that
would get it killed there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http.client
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import digits
import grpc
import numpy as np
import onnxruntime
import pytest
import serverproc
from predict_util import (
    INPUT_ALIAS,
    MODEL_NAME,
    OUTPUT_ALIAS,
    RPC_TIMEOUT_S,
    predict_request,
    to_ndarray,
)
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

SEVEN = digits.DIGITS_DIR / "7.png"
MODEL_PATH = serverproc.REPO_ROOT / "examples" / "models" / MODEL_NAME / "1" / "model.onnx"

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"
IMAGE_ELEMENTS = 28 * 28 * 1
IMAGE_BYTES = IMAGE_ELEMENTS * 4

MIB = 1 << 20
GIB = 1 << 30
# The memory limit deploy/kubernetes/deployment.yaml gives the server.
MEMORY_LIMIT_BYTES = 1 * GIB
# The REST body limit (MAX_BODY_BYTES in src/rest/mod.rs, gRPC's message
# limit); a gzip body may inflate to 100 MiB only (MAX_INFLATED_BYTES).
MAX_BODY_BYTES = (1 << 31) - 1
# TensorFlow Serving's limit on an inflated gzip body is 100 MiB (net_http
# ZLib::kMaxUncompressedBytes), and ferroserve's too; a refused bomb may
# cost that much and some slack, not the whole body limit.
GZIP_BOMB_PEAK_LIMIT_BYTES = 256 * MIB
# Refusing a shape must not allocate for it.
REFUSED_SHAPE_PEAK_LIMIT_BYTES = 64 * MIB

HTTP_TIMEOUT_S = 60.0
SOCKET_TIMEOUT_S = 10.0
QUICK_S = 2.0

UPLOAD_THREADS = 16
UPLOAD_BYTES = 8 * MIB


# --- Fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[serverproc.Server]:
    # No drain delay at the end: nothing balances load onto this server.
    flags = (*serverproc.MNIST_FLAGS, "--shutdown_delay_seconds=0")
    with serverproc.running_server("hostile", flags, rest_api=True) as running:
        yield running


@pytest.fixture(scope="module")
def grpc_channel(hostile_server: serverproc.Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(hostile_server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(grpc_channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel)


@pytest.fixture(scope="module")
def raw_predict(grpc_channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    """Predict taking and returning serialized bytes, so requests can be malformed."""
    return grpc_channel.unary_unary(
        PREDICT_METHOD, request_serializer=None, response_deserializer=None
    )


@pytest.fixture(autouse=True)
def still_serving(
    hostile_server: serverproc.Server,
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> Iterator[None]:
    """After the case: the process runs and answers Predict right on both APIs."""
    yield
    code = hostile_server.process.poll()
    assert code is None, (
        f"server exited with status {code}\n" + serverproc.log_tail(hostile_server.log_path)
    )
    response = stub.Predict(
        predict_request(digits.load_batch([SEVEN])), timeout=RPC_TIMEOUT_S
    )
    assert int(np.argmax(to_ndarray(response.outputs[OUTPUT_ALIAS]))) == 7
    status, answer = rest_post(hostile_server, seven_rest_body())
    assert status == 200, answer
    assert int(np.argmax(answer["predictions"][0])) == 7


# --- Helpers ----------------------------------------------------------------


def rpc_error(call: Callable, request, timeout: float = RPC_TIMEOUT_S) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=timeout)
    return caught.value


def varint(value: int) -> bytes:
    """A protobuf base-128 varint (negative numbers as their 64-bit pattern)."""
    return serverproc.encode_varint(value & ((1 << 64) - 1))


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


# PredictRequest.model_spec = ModelSpec{name: "mnist"}
MODEL_SPEC = length_delimited(1, length_delimited(1, MODEL_NAME.encode()))
# TensorProto.dtype = DT_FLOAT
FLOAT_DTYPE = tag(1, 0) + varint(types_pb2.DT_FLOAT)


def input_entry(tensor: bytes, alias: bytes = INPUT_ALIAS.encode()) -> bytes:
    """PredictRequest.inputs[alias] = tensor (a serialized TensorProto)."""
    return length_delimited(2, length_delimited(1, alias) + length_delimited(2, tensor))


def nested_variants(depth: int) -> bytes:
    """TensorProto.variant_val[0].tensors[0].variant_val[0]... ``depth`` times."""
    inner = b""
    for _ in range(depth):
        inner = length_delimited(15, length_delimited(3, inner))
    return inner


def tensor_request(
    dims: list[int], dtype: int = types_pb2.DT_FLOAT, **values
) -> predict_pb2.PredictRequest:
    """A Predict of ``image`` with the given dims and typed values."""
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    for field, value in values.items():
        if isinstance(value, list):
            getattr(tensor, field).extend(value)
        else:
            setattr(tensor, field, value)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs[INPUT_ALIAS].CopyFrom(tensor)
    return request


def seven_rest_body() -> bytes:
    return json.dumps({"instances": [digits.load_image(SEVEN).tolist()]}).encode()


def rest_post(
    server: serverproc.Server,
    body: bytes,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> tuple[int, dict]:
    """POST ``body`` to the REST Predict; the HTTP status and the JSON answer."""
    host, port = server.rest_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", PREDICT_PATH, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        answer = json.loads(data)
    except ValueError:
        answer = {"<not JSON>": data[:500].decode("utf-8", "replace")}
    return response.status, answer


def rest_error(status: int, answer: dict) -> str:
    """The message of a REST error answer, checking its shape."""
    assert 400 <= status < 500, (status, answer)
    assert list(answer) == ["error"], answer
    assert isinstance(answer["error"], str) and answer["error"], answer
    return answer["error"]


def read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything the peer sends until it closes; whether it closed in time."""
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not data:
            return received, True
        received += data


def send_raw(address: str, payload: bytes) -> tuple[bytes, bool]:
    """Send ``payload`` on a fresh TCP connection; the reply and whether the server closed."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        return read_until_closed(sock)


def status_field_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class PeakRss:
    """The resident memory of a process before, at most during, and after a block.

    The kernel's peak (VmHWM) is reset on entry when the process lets us;
    VmRSS is also sampled every few milliseconds, so a short spike is seen
    either way.
    """

    SAMPLE_S = 0.005

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = self.after = 0
        self._reset = False
        self._sampled = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w", encoding="ascii") as refs:
                refs.write("5")
            self._reset = True
        except OSError:
            self._reset = False
        self.before = status_field_bytes(self.pid, "VmRSS")
        self._sampler.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._sampler.join()
        self.after = status_field_bytes(self.pid, "VmRSS")
        self.peak = max(self._sampled, self.before, self.after)
        if self._reset:
            self.peak = max(self.peak, status_field_bytes(self.pid, "VmHWM"))

    @property
    def growth(self) -> int:
        """How far the peak rose above the resident memory at the start."""
        return self.peak - self.before

    def _sample(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, AssertionError):
                self._sampled = max(self._sampled, status_field_bytes(self.pid, "VmRSS"))
            self._stop.wait(self.SAMPLE_S)

    def record(self, record_property: Callable[[str, object], None], prefix: str) -> None:
        for name in ("before", "peak", "after"):
            record_property(f"{prefix}_rss_{name}_mib", round(getattr(self, name) / MIB, 1))


def mib(n: int) -> str:
    return f"{n / MIB:.0f} MiB"


# --- gRPC: undecodable messages ---------------------------------------------


@pytest.mark.parametrize(
    "cut",
    [pytest.param(lambda n: n // 2, id="half"), pytest.param(lambda n: n - 1, id="last_byte"),
     pytest.param(lambda n: 1, id="first_byte_only")],
)
def test_truncated_predict_request_is_refused(raw_predict, cut):
    """A PredictRequest cut short cannot be decoded: INTERNAL (tonic and gRPC C++
    both answer an undecodable message so), or INVALID_ARGUMENT."""
    whole = predict_request(digits.load_batch([SEVEN])).SerializeToString()

    error = rpc_error(raw_predict, whole[: cut(len(whole))])

    assert error.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    details = error.details().lower()
    assert "decode" in details or "parse" in details, error.details()


WIRE_CASES = [
    pytest.param(tag(1, 0) + varint(5), ("model_spec", "wire type"), id="model_spec_as_varint"),
    pytest.param(MODEL_SPEC + tag(2, 5) + struct.pack("<f", 1.0), ("inputs", "wire type"),
                 id="inputs_as_fixed32"),
    pytest.param(MODEL_SPEC + tag(3, 1) + bytes(8), ("output_filter", "wire type"),
                 id="output_filter_as_fixed64"),
    pytest.param(MODEL_SPEC + input_entry(length_delimited(1, b"\x01")), ("dtype", "wire type"),
                 id="dtype_as_bytes"),
    pytest.param(
        # TensorProto.tensor_shape.dim[0].size as a length-delimited field
        MODEL_SPEC + input_entry(
            FLOAT_DTYPE + length_delimited(2, length_delimited(2, length_delimited(1, b"\x01")))
        ),
        ("size", "wire type"),
        id="dim_size_as_bytes",
    ),
    pytest.param(MODEL_SPEC + input_entry(FLOAT_DTYPE + length_delimited(5, b"\x00\x00\x80")),
                 ("float_val",), id="packed_float_val_of_three_bytes"),
    pytest.param(MODEL_SPEC + tag(9, 7) + b"\x00", ("wire type",), id="wire_type_7"),
    pytest.param(MODEL_SPEC + b"\x00\x00", ("tag",), id="field_number_0"),
    pytest.param(MODEL_SPEC + tag(9, 0) + b"\xff" * 11, ("varint",), id="eleven_byte_varint"),
    pytest.param(MODEL_SPEC + tag(9, 2) + varint(1 << 62), ("underflow",),
                 id="length_past_the_end"),
    pytest.param(length_delimited(1, length_delimited(1, b"mn\xffist")), ("UTF-8",),
                 id="model_name_not_utf8"),
    pytest.param(MODEL_SPEC + input_entry(FLOAT_DTYPE, alias=b"im\xc3age"), ("UTF-8",),
                 id="input_alias_not_utf8"),
    pytest.param(MODEL_SPEC + input_entry(FLOAT_DTYPE + nested_variants(10_000)), ("recursion",),
                 id="tensors_nested_10000_deep"),
]


@pytest.mark.parametrize(("payload", "named"), WIRE_CASES)
def test_malformed_wire_format_is_refused(raw_predict, payload: bytes, named: tuple[str, ...]):
    """Fields with the wrong wire type, bad tags, varints and lengths, invalid
    UTF-8 in string fields and nesting past the recursion limit are refused as
    undecodable, and the message names the field or the fault."""
    started = time.monotonic()
    error = rpc_error(raw_predict, payload)
    elapsed = time.monotonic() - started

    assert error.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    for word in named:
        assert word in error.details(), error.details()
    assert elapsed < QUICK_S


# --- gRPC: tensors that do not describe a tensor ----------------------------


@pytest.mark.parametrize(
    "dims",
    [
        pytest.param([2**62, 2**62, 4], id="product_past_int64"),
        # 2**62 * 784 is 0 modulo 2**64: a wrapping product would see no elements.
        pytest.param([2**62, 28, 28, 1], id="product_wraps_to_zero"),
        pytest.param([2**63 - 1, 2**63 - 1, 28, 1], id="int64_max_dims"),
    ],
)
def test_dims_overflowing_the_element_count_are_invalid(stub, dims: list[int]):
    """Dims whose product does not fit int64 (or usize) are a parsing error of the tensor."""
    error = rpc_error(stub.Predict, tensor_request(dims, float_val=[1.0]))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"tensor parsing error: {INPUT_ALIAS}"), error.details()
    assert str(dims[0]) in error.details()


@pytest.mark.parametrize(
    "dims",
    [
        pytest.param([-5, 28, 28, 1], id="minus_5"),
        pytest.param([-1, 28, 28, 1], id="minus_1_unknown_only_in_signatures"),
        pytest.param([1, 28, -5, 1], id="inner_minus_5"),
        pytest.param([-(2**63), 28, 28, 1], id="int64_min"),
    ],
)
def test_negative_dims_are_invalid(stub, dims: list[int]):
    """Request tensors need every dim >= 0; -1 (unknown) is for signatures only."""
    error = rpc_error(stub.Predict, tensor_request(dims, float_val=[1.0]))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"tensor parsing error: {INPUT_ALIAS}"), error.details()
    negative = next(size for size in dims if size < 0)
    assert str(negative) in error.details()


@pytest.mark.parametrize("length", [1, IMAGE_BYTES - 1, IMAGE_BYTES + 4, 2 * IMAGE_BYTES])
def test_tensor_content_of_the_wrong_length_is_invalid(stub, length: int):
    """tensor_content must hold exactly the shape's bytes."""
    request = tensor_request([1, 28, 28, 1], tensor_content=bytes(length))

    error = rpc_error(stub.Predict, request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"tensor parsing error: {INPUT_ALIAS}"), error.details()
    assert str(length) in error.details() and str(IMAGE_BYTES) in error.details()


def non_finite_images() -> np.ndarray:
    """All NaN, all +inf, all -inf, the seven with one NaN pixel, the seven with one +inf pixel."""
    images = [np.full(digits.IMAGE_SHAPE, value, np.float32) for value in (np.nan, np.inf, -np.inf)]
    for value in (np.nan, np.inf):
        seven = digits.load_image(SEVEN).copy()
        seven[14, 14, 0] = value
        images.append(seven)
    return np.stack(images)


def test_nan_and_infinite_inputs_are_answered(stub):
    """NaN and infinities are floats like any other: the model runs and answers."""
    images = non_finite_images()

    response = stub.Predict(predict_request(images, as_content=True), timeout=RPC_TIMEOUT_S)

    probabilities = to_ndarray(response.outputs[OUTPUT_ALIAS])
    assert probabilities.shape == (len(images), digits.NUM_CLASSES)
    assert response.model_spec.name == MODEL_NAME


def test_non_finite_inputs_give_what_onnxruntime_gives(stub):
    """Outputs for NaN and infinite inputs match onnxruntime, NaN for NaN."""
    images = non_finite_images()
    session = onnxruntime.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {session.get_inputs()[0].name: images})

    response = stub.Predict(predict_request(images, as_content=True), timeout=RPC_TIMEOUT_S)

    np.testing.assert_allclose(
        to_ndarray(response.outputs[OUTPUT_ALIAS]), expected, rtol=1e-4, atol=1e-5, equal_nan=True
    )


def test_ten_thousand_inputs_are_refused_quickly(stub):
    """10,000 map entries for a one-input signature: INVALID_ARGUMENT at once.

    The message is TensorFlow Serving's count mismatch; it lists every sent
    alias before the expected ones, so the 1024-byte cut the spec prescribes
    (with "...TRUNCATED") keeps the counts but not the expected alias.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for i in range(10_000):
        request.inputs[f"input_{i:05d}"].CopyFrom(empty)

    started = time.monotonic()
    error = rpc_error(stub.Predict, request)
    elapsed = time.monotonic() - started

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(
        "input size does not match signature: 10000!=1 len({input_00000,input_00001,"
    ), error.details()[:200]
    assert error.details().endswith("...TRUNCATED")
    assert len(error.details()) == 1024 + len("...TRUNCATED")
    assert elapsed < QUICK_S


def test_huge_dims_without_values_are_refused_before_allocating(
    hostile_server, stub, record_property
):
    """[100000000, 28, 28, 1] with no values would be zero-filled (313.6 GB of
    floats): refused as a parsing error, without the process growing."""
    request = tensor_request([100_000_000, 28, 28, 1])

    started = time.monotonic()
    with PeakRss(hostile_server.process.pid) as memory:
        error = rpc_error(stub.Predict, request)
    elapsed = time.monotonic() - started
    memory.record(record_property, "huge_dims")

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"tensor parsing error: {INPUT_ALIAS}"), error.details()
    assert "[100000000,28,28,1]" in error.details()
    assert elapsed < QUICK_S
    assert memory.growth < REFUSED_SHAPE_PEAK_LIMIT_BYTES, mib(memory.growth)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"string_val": [b"x"]}, id="string_val"),
        pytest.param({"string_val": [b"\xff" * 4] * IMAGE_ELEMENTS}, id="string_val_per_pixel"),
        pytest.param({}, id="no_values"),
    ],
)
def test_string_tensor_for_a_float_input_is_invalid(stub, values: dict):
    """A DT_STRING tensor fed to the DT_FLOAT input ``image``."""
    request = tensor_request([1, 28, 28, 1], dtype=types_pb2.DT_STRING, **values)

    error = rpc_error(stub.Predict, request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert INPUT_ALIAS in error.details() and "DT_STRING" in error.details(), error.details()


# --- REST: bodies that are not JSON -------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000, id="arrays"),
        pytest.param(b'{"instances": ' + b"[" * 100_000, id="arrays_in_instances"),
        pytest.param(b'{"a": ' * 100_000, id="objects"),
        pytest.param(b'{"instances": ' + b"[" * 100_000 + b"0.5" + b"]" * 100_000 + b"}",
                     id="closed_arrays_in_instances"),
    ],
)
def test_deeply_nested_json_is_a_parse_error(hostile_server, body: bytes):
    """100,000 levels of nesting: a 400 with an error body, at once, no crash."""
    started = time.monotonic()
    status, answer = rest_post(hostile_server, body)
    elapsed = time.monotonic() - started

    assert status == 400
    assert rest_error(status, answer).startswith("JSON Parse error: "), answer
    assert elapsed < QUICK_S


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"\xff\xfe" + seven_rest_body(),
                     "JSON Parse error: Invalid value. at offset: 0", id="before_the_document"),
        pytest.param(b'{"signature_name": "\xff\xfe", "instances": [0.5]}',
                     "JSON Parse error: Invalid encoding in string.", id="in_a_string"),
        pytest.param(b'{"signature_name": "\xc0\xaf", "instances": [0.5]}',
                     "JSON Parse error: Invalid encoding in string.", id="overlong_encoding"),
        pytest.param(b'{"signature_name": "\xed\xa0\x80", "instances": [0.5]}',
                     "JSON Parse error: Invalid encoding in string.", id="encoded_surrogate"),
        pytest.param(b'{"inst\xe9nces": [0.5]}', "JSON Parse error: Invalid encoding in string.",
                     id="in_a_key"),
    ],
)
def test_invalid_utf8_is_a_bad_request(hostile_server, body: bytes, message: str):
    """Bytes that are not UTF-8: 400 with RapidJSON's message for the fault.

    (RapidJSON as TensorFlow Serving configures it does not validate UTF-8
    inside strings; there the unknown signature name makes these a 400.)
    """
    status, answer = rest_post(hostile_server, body)

    assert status == 400
    assert rest_error(status, answer).startswith(message), answer


# --- REST: gzip ---------------------------------------------------------------


def gzip_of_zeros(size_mib: int) -> bytes:
    """A valid gzip member of ``size_mib`` MiB of zero bytes, built in well under a second.

    One MiB of zeros deflated and ended with a full flush is a byte-aligned
    run of blocks that refers to nothing before it, so repeating it gives the
    deflate stream of all the zeros without compressing them all.
    """
    chunk = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(size_mib):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (size_mib * MIB) & 0xFFFFFFFF)
    return header + first + block * (size_mib - 1) + end + trailer


@dataclasses.dataclass(frozen=True)
class BombAnswer:
    """A gzip bomb, the server's answer, and the server's memory meanwhile."""

    compressed_bytes: int
    inflated_bytes: int
    status: int
    answer: dict
    elapsed_s: float
    memory: PeakRss


@pytest.fixture(scope="module")
def gzip_bomb_answer(hostile_server) -> BombAnswer:
    """What the server answers a ~2 MB gzip that inflates to 2 GiB: past the body limit
    and twenty times past the inflation limit."""
    assert zlib.decompress(gzip_of_zeros(4), 31) == bytes(4 * MIB)
    size_mib = MAX_BODY_BYTES // MIB + 1
    bomb = gzip_of_zeros(size_mib)
    assert size_mib * MIB > MAX_BODY_BYTES
    started = time.monotonic()
    with PeakRss(hostile_server.process.pid) as memory:
        status, answer = rest_post(hostile_server, bomb, {"Content-Encoding": "gzip"})
    return BombAnswer(len(bomb), size_mib * MIB, status, answer, time.monotonic() - started, memory)


def test_gzip_bomb_is_refused_quickly(gzip_bomb_answer: BombAnswer, record_property):
    """A gzip body inflating past the limit: a 4xx naming the limit, within seconds,
    and the memory it took is given back."""
    bomb = gzip_bomb_answer
    bomb.memory.record(record_property, "gzip_bomb")
    record_property("gzip_bomb_compressed_bytes", bomb.compressed_bytes)
    record_property("gzip_bomb_inflated_bytes", bomb.inflated_bytes)
    record_property("gzip_bomb_seconds", round(bomb.elapsed_s, 2))

    assert bomb.status in (400, 413, 429), bomb.answer
    error = rest_error(bomb.status, bomb.answer)
    assert "limit" in error or "max_inflight_request_bytes" in error, error
    assert bomb.elapsed_s < 15
    kept = bomb.memory.after - bomb.memory.before
    assert kept < GZIP_BOMB_PEAK_LIMIT_BYTES, f"VmRSS {mib(bomb.memory.after)} after the bomb"


def test_gzip_bomb_is_not_inflated_into_memory(gzip_bomb_answer: BombAnswer):
    """Refusing a gzip bomb must not cost the memory of the body limit."""
    memory = gzip_bomb_answer.memory
    assert memory.growth < GZIP_BOMB_PEAK_LIMIT_BYTES, (
        f"peak RSS {mib(memory.peak)}, {mib(memory.before)} before"
    )


def corrupt_gzips() -> list:
    body = gzip.compress(seven_rest_body())
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 0xFF
    bad_crc = bytearray(body)
    bad_crc[-8] ^= 0x01
    bad_size = bytearray(body)
    bad_size[-1] ^= 0x01
    return [
        pytest.param(body[:-20], id="truncated"),
        pytest.param(body[:10], id="header_only"),
        pytest.param(bytes(flipped), id="flipped_byte"),
        pytest.param(bytes(bad_crc), id="wrong_crc"),
        pytest.param(bytes(bad_size), id="wrong_length"),
        pytest.param(seven_rest_body(), id="not_gzip"),
        pytest.param(b"", id="empty"),
    ]


@pytest.mark.parametrize("body", corrupt_gzips())
def test_corrupt_gzip_is_a_bad_request(hostile_server, body: bytes):
    """A body sent as ``Content-Encoding: gzip`` that does not inflate: 400."""
    status, answer = rest_post(hostile_server, body, {"Content-Encoding": "gzip"})

    assert status == 400
    assert "gzip" in rest_error(status, answer), answer


# --- REST: JSON values --------------------------------------------------------


def image_body(literal: str, pixel: tuple[int, int] = (0, 0)) -> bytes:
    """The seven as a REST Predict body, with one pixel written as ``literal``."""
    marker = 12345.0
    image = digits.load_image(SEVEN).tolist()
    image[pixel[0]][pixel[1]][0] = marker
    return json.dumps({"instances": [image]}).replace(repr(marker), literal, 1).encode()


def zero_image(height: int = 28, width: int = 28) -> list:
    return [[[0.0]] * width for _ in range(height)]


@pytest.mark.parametrize(
    ("instances", "named"),
    [
        pytest.param([[1.0, 2.0, 3.0]], (INPUT_ALIAS, "[1,3]"), id="rank_2"),
        pytest.param([zero_image(28, 27)], (INPUT_ALIAS, "[1,28,27,1]"), id="width_27"),
        pytest.param(
            [zero_image(), zero_image(28, 27)],
            ("Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
             "Expecting shape [28,28,1] but got: [28,27,1]",),
            id="instances_of_two_shapes",
        ),
        pytest.param([[[[0.0]] * 28] * 27 + [[[0.0]] * 27]],
                     ("Encountered list at unexpected size: 27 at level: 1 expected size: 28",),
                     id="ragged"),
        pytest.param([[[0.0] * 28] + [[[0.0]] * 28] * 27], ("level",), id="first_row_flat"),
    ],
)
def test_rest_instances_of_the_wrong_shape_are_invalid(hostile_server, instances: list, named):
    """Instances that are not [N, 28, 28, 1], or not all one shape: 400 naming the shapes."""
    status, answer = rest_post(hostile_server, json.dumps({"instances": instances}).encode())

    assert status == 400
    error = rest_error(status, answer)
    for words in named:
        assert words in error, error


def test_rest_string_for_a_float_input_is_invalid(hostile_server):
    """A JSON string where ``image`` takes floats: the spec's type error."""
    status, answer = rest_post(hostile_server, image_body('"x"'))

    assert status == 400
    assert rest_error(status, answer) == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "x" Type: String is not of expected type: float'
    )


ROW_ERROR = "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "


@pytest.mark.parametrize(
    ("last_row", "message"),
    [
        pytest.param(
            [0.0] * 28,
            "JSON Value: 0.0 found at incorrect level: 3 in the JSON DOM. Expected at level: 3",
            id="scalar_where_list",
        ),
        pytest.param([[[0.0]]] * 28, "Encountered list at unexpected level: 3 expected < 3",
                     id="list_deeper_than_rank"),
    ],
)
def test_rest_values_at_the_wrong_level_have_tensorflow_servings_texts(
    hostile_server, last_row: list, message: str
):
    """An instance whose last row is nested one level too shallow or too deep.

    The spec gives the format ``JSON Value: <v> found at incorrect level: <l>
    in the JSON DOM. Expected at level: <r>``; TensorFlow Serving's
    FillTensorProto puts the tensor's rank in ``<r>`` and has its own text
    for a list below the last dim.
    """
    instance = [[[0.0]] * 28] * 27 + [last_row]

    status, answer = rest_post(hostile_server, json.dumps({"instances": [instance]}).encode())

    assert status == 400
    assert rest_error(status, answer) == ROW_ERROR + message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("pixel", [(0, 0), (14, 14)], ids=["corner", "centre"])
def test_rest_non_finite_literals_are_accepted(hostile_server, literal: str, pixel):
    """NaN, Infinity and -Infinity are floats to TensorFlow Serving's JSON reader."""
    status, answer = rest_post(hostile_server, image_body(literal, pixel))

    assert status == 200, answer
    assert np.asarray(answer["predictions"], dtype=np.float64).shape == (1, digits.NUM_CLASSES)


@pytest.mark.parametrize("literal", ["Inf", "-Inf", "-NaN"])
def test_rest_short_non_finite_literals_are_accepted(hostile_server, literal: str):
    """The other spellings RapidJSON's NaN-and-Inf mode takes."""
    status, answer = rest_post(hostile_server, image_body(literal))

    assert status == 200, answer


@pytest.mark.parametrize("literal", ["1e999", "-1e999", "1e309", "9" * 400])
def test_rest_numbers_beyond_double_are_parse_errors(hostile_server, literal: str):
    """Numbers a double cannot hold: RapidJSON's error, at the number's offset."""
    body = image_body(literal)

    status, answer = rest_post(hostile_server, body)

    assert status == 400
    assert rest_error(status, answer) == (
        "JSON Parse error: Number too big to be stored in double. "
        f"at offset: {body.index(literal.encode())}"
    )


# --- REST: load -------------------------------------------------------------


def large_bodies() -> list[tuple[bytes, bool]]:
    """Bodies of about UPLOAD_BYTES: (body, whether it is a valid request).

    Half are valid JSON of the wrong shape (two channels), whose numbers are
    all parsed before the shape is refused; half are the seven padded with
    whitespace, valid requests.
    """
    two_channels = json.dumps(np.full((28, 28, 2), 0.5).tolist(), separators=(",", ":"))
    rows = UPLOAD_BYTES // (len(two_channels) + 1)
    wrong_shape = ('{"instances":[' + ",".join([two_channels] * rows) + "]}").encode()
    seven = seven_rest_body()
    padded = seven[:-1] + b" " * (UPLOAD_BYTES - len(seven)) + b"}"
    return [(wrong_shape, False) if i % 2 else (padded, True) for i in range(UPLOAD_THREADS)]


def test_concurrent_large_uploads_are_all_answered(hostile_server, record_property):
    """16 clients POST ~8 MB bodies at once: each gets its answer (200 for the
    valid ones, a 4xx for the others), none hangs, and memory stays bounded."""
    bodies = large_bodies()
    start = threading.Barrier(len(bodies))

    def upload(body: bytes) -> tuple[int, dict, float]:
        start.wait(timeout=HTTP_TIMEOUT_S)
        started = time.monotonic()
        status, answer = rest_post(hostile_server, body)
        return status, answer, time.monotonic() - started

    started = time.monotonic()
    with PeakRss(hostile_server.process.pid) as memory:
        with ThreadPoolExecutor(len(bodies)) as pool:
            results = list(pool.map(upload, [body for body, _ in bodies]))
    elapsed = time.monotonic() - started
    memory.record(record_property, "uploads")
    record_property("uploads_seconds", round(elapsed, 2))
    record_property("uploads_slowest_seconds", round(max(r[2] for r in results), 2))

    for (status, answer, _), (_, valid) in zip(results, bodies, strict=True):
        if valid and status == 200:
            assert int(np.argmax(answer["predictions"][0])) == 7
            continue
        # A valid request may be refused only for want of resources.
        assert status in ((429, 503) if valid else (400, 429, 503)), (status, answer)
        error = rest_error(status, answer)
        if status == 400:
            assert INPUT_ALIAS in error and ",28,28,2]" in error, error
    assert any(status == 200 for status, _, _ in results), results
    assert memory.growth < MEMORY_LIMIT_BYTES, (
        f"peak RSS {mib(memory.peak)}, {mib(memory.before)} before"
    )


# --- Raw sockets ------------------------------------------------------------

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TLS_CLIENT_HELLO_START = bytes.fromhex("16030100c4010000c00303") + bytes(200)


@pytest.mark.parametrize(
    ("payload", "answer"),
    [
        pytest.param(b"\x00\xffGARBAGE\x16\x03\x01 nonsense\r\n\r\n", b"HTTP/1.1 400", id="junk"),
        pytest.param(TLS_CLIENT_HELLO_START, b"HTTP/1.1 400", id="tls_client_hello"),
        pytest.param(bytes(100_000), b"HTTP/1.1 400", id="nul_bytes"),
        pytest.param(b"GET / HTTP/9.9\r\n\r\n", b"HTTP/1.1 400", id="http_9_9"),
        pytest.param(b"POST " + PREDICT_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: -1\r\n\r\n{", b"HTTP/1.1 400", id="negative_content_length"),
        pytest.param(b"GET /v1/models/mnist HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * MIB
                     + b"\r\n\r\n", b"HTTP/1.1 431", id="one_mib_header"),
        pytest.param(HTTP2_PREFACE + b"\xff" * 64, None, id="http2_preface_then_junk"),
    ],
)
def test_junk_on_the_rest_port_closes_the_connection(hostile_server, payload: bytes, answer):
    """Bytes that are not an HTTP request: an error answer, then the connection closes."""
    received, closed = send_raw(hostile_server.rest_address, payload)

    assert closed, f"connection still open after {SOCKET_TIMEOUT_S} s: {received[:200]!r}"
    if answer is not None:
        assert received.startswith(answer), received[:200]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\xffGARBAGE" * 100, id="junk"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http_1_1"),
        pytest.param(TLS_CLIENT_HELLO_START, id="tls_client_hello"),
        pytest.param(HTTP2_PREFACE + b"\xff" * 64, id="preface_then_junk_frame"),
    ],
)
def test_junk_on_the_grpc_port_closes_the_connection(hostile_server, payload: bytes):
    """Bytes that are not HTTP/2: the connection closes (after at most a SETTINGS
    and a GOAWAY frame)."""
    received, closed = send_raw(hostile_server.address, payload)

    assert closed, f"connection still open after {SOCKET_TIMEOUT_S} s: {received[:200]!r}"
    assert b"HTTP/1.1 200" not in received


def test_stalled_connections_do_not_block_other_clients(hostile_server, stub):
    """Half-sent requests held open on both ports leave other clients served."""
    rest_host, rest_port = hostile_server.rest_address.rsplit(":", 1)
    grpc_host, grpc_port = hostile_server.address.rsplit(":", 1)
    stalls = [
        ((rest_host, rest_port), b"POST " + PREDICT_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"),
        ((rest_host, rest_port), b"POST " + PREDICT_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
         b"Content-Length: 10000000\r\n\r\n" + b"[" * 1000),
        ((grpc_host, grpc_port), HTTP2_PREFACE),
        ((grpc_host, grpc_port), b"PRI"),
    ]
    with contextlib.ExitStack() as stack:
        for (host, port), payload in stalls:
            sock = stack.enter_context(
                socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S)
            )
            sock.sendall(payload)

        response = stub.Predict(predict_request(digits.load_batch([SEVEN])), timeout=RPC_TIMEOUT_S)
        status, answer = rest_post(hostile_server, seven_rest_body(), timeout=SOCKET_TIMEOUT_S)

    assert int(np.argmax(to_ndarray(response.outputs[OUTPUT_ALIAS]))) == 7
    assert status == 200, answer
    assert int(np.argmax(answer["predictions"][0])) == 7


# --- After everything ---------------------------------------------------------


def test_server_survived_with_bounded_memory(hostile_server, record_property):
    """Last: the process is alive, logged no panic, and is resident under the limit."""
    pid = hostile_server.process.pid
    rss = status_field_bytes(pid, "VmRSS")
    record_property("final_rss_mib", round(rss / MIB, 1))
    record_property("final_hwm_mib", round(status_field_bytes(pid, "VmHWM") / MIB, 1))

    assert hostile_server.process.poll() is None
    log = hostile_server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "panicked" not in log, serverproc.log_tail(hostile_server.log_path)
    assert rss < MEMORY_LIMIT_BYTES, f"VmRSS {mib(rss)}"
