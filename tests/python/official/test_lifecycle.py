"""Model lifecycle, driven by the official TensorFlow Serving client.

The servers here read a text-format ModelServerConfig (``--model_config_file``)
from a temporary directory and look for new versions every second.  The tests
add, break, fix and delete version directories on disk, reload the model list
through ModelService, and watch the outcome through GetModelStatus, Predict
and the gRPC health service.

Every version holds the bundled mnist model, so answers tell versions apart
only by ``model_spec.version``.  New versions are written under a non-numeric
name and renamed into place, so a server never sees one half-written.

The tests that share the module's server run in file order and each builds on
the state the previous one left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import digits
import grpc
import pytest
import serverproc
import tensorflow as tf
from google.protobuf import any_pb2, text_format
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

MNIST_ONNX = serverproc.REPO_ROOT / "examples/models/mnist/1/model.onnx"
IMAGE_PATHS = digits.digit_images()
IMAGES = digits.load_batch(IMAGE_PATHS)
CLASSES = [digits.label_of(path) for path in IMAGE_PATHS]

# Fast polling and load retries; no drain delay on SIGTERM.
SERVER_FLAGS = (
    "--file_system_poll_wait_seconds=1",
    "--shutdown_delay_seconds=0",
    "--max_num_load_retries=1",
    "--load_retry_interval_micros=100000",
)
RPC_TIMEOUT_S = 10.0
WAIT_S = 20.0
POLL_S = 0.1

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
STABLE_CANARY = {"stable": 1, "canary": 2}

ModelConfig = model_server_config_pb2.ModelConfig
ServerConfig = model_server_config_pb2.ModelServerConfig
VersionStatus = get_model_status_pb2.ModelVersionStatus
T = TypeVar("T")


# --- model directories and configs ------------------------------------------


def add_version(
    base: Path, version: int, model: bytes | None = None, mode: int | None = None
) -> Path:
    """Publish ``<base>/<version>`` with ``model`` as its ``model.onnx``.

    ``None`` copies the mnist model and ``b""`` leaves the directory empty;
    ``mode`` is applied to the directory before it is published.
    """
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f"incoming-{version}"
    staging.mkdir()
    if model is None:
        shutil.copyfile(MNIST_ONNX, staging / "model.onnx")
    elif model:
        (staging / "model.onnx").write_bytes(model)
    if mode is not None:
        staging.chmod(mode)
    final = base / str(version)
    os.rename(staging, final)
    return final


def replace_model_file(base: Path, version: int) -> None:
    """Overwrite ``<base>/<version>/model.onnx`` with the mnist model at once."""
    staging = base / "incoming-model.onnx"
    shutil.copyfile(MNIST_ONNX, staging)
    os.replace(staging, base / str(version) / "model.onnx")


def remove_version(base: Path, version: int) -> None:
    """Take ``<base>/<version>`` away in one step, then delete it."""
    doomed = base / f"removed-{version}"
    os.rename(base / str(version), doomed)
    shutil.rmtree(doomed)


def model_config(
    name: str,
    base_path: Path | str,
    *,
    versions: tuple[int, ...] = (),
    labels: dict[str, int] | None = None,
    platform: str = "onnx",
) -> ModelConfig:
    """One model: its latest version, or exactly ``versions``."""
    config = ModelConfig(name=name, base_path=str(base_path), model_platform=platform)
    if versions:
        config.model_version_policy.specific.versions.extend(versions)
    config.version_labels.update(labels or {})
    return config


def server_config(*models: ModelConfig) -> ServerConfig:
    config = ServerConfig()
    config.model_config_list.config.extend(models)
    return config


def write_config_file(path: Path, config: ServerConfig | str) -> None:
    """Replace the config file at once, so a poll never reads half of it."""
    text = config if isinstance(config, str) else text_format.MessageToString(config)
    staging = path.with_name(path.name + ".incoming")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


# --- talking to a server ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Client:
    """A running server and the official stubs connected to it."""

    server: serverproc.Server
    channel: grpc.Channel
    predictions: prediction_service_pb2_grpc.PredictionServiceStub
    models: model_service_pb2_grpc.ModelServiceStub

    def predict(
        self, name: str, *, version: int | None = None, label: str | None = None
    ) -> int:
        """Classify every digit, check the classes, return the answering version."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        request.inputs["image"].CopyFrom(tf.make_tensor_proto(IMAGES))
        response = self.predictions.Predict(request, timeout=RPC_TIMEOUT_S)
        assert response.model_spec.name == name
        probabilities = tf.make_ndarray(response.outputs["probabilities"])
        assert probabilities.argmax(axis=1).tolist() == CLASSES
        return response.model_spec.version.value

    def statuses(self, name: str, label: str = "") -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if label:
            request.model_spec.version_label = label
        response = self.models.GetModelStatus(request, timeout=RPC_TIMEOUT_S)
        return list(response.model_version_status)

    def states(self, name: str) -> list[tuple[int, str]]:
        """``(version, state name)`` for each version GetModelStatus lists."""
        name_of = VersionStatus.State.Name
        return [(s.version, name_of(s.state)) for s in self.statuses(name)]

    def status_of(self, name: str, version: int) -> VersionStatus:
        matching = [s for s in self.statuses(name) if s.version == version]
        assert len(matching) == 1, f"{name} version {version} in {self.states(name)}"
        return matching[0]

    def reload(self, config: ServerConfig) -> None:
        request = model_management_pb2.ReloadConfigRequest(config=config)
        response = self.models.HandleReloadConfigRequest(request, timeout=WAIT_S)
        assert response.status.error_code == error_codes_pb2.OK, response

    def health(self, service: str) -> int:
        return serverproc.health_check(self.channel, service)

    def wait_for(self, check: Callable[[], T]) -> T:
        """Call ``check`` until it neither fails an assertion nor an RPC."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                return check()
            except (AssertionError, grpc.RpcError) as err:
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"still failing after {WAIT_S:.0f} s: {err!r}\n"
                        + serverproc.log_tail(self.server.log_path)
                    ) from err
            time.sleep(POLL_S)

    def wait_for_states(self, name: str, expected: list[tuple[int, str]]) -> None:
        self.wait_for(lambda: _expect(self.states(name), expected))

    def wait_for_failure(self, name: str, version: int) -> VersionStatus:
        """Wait until ``version`` has ended with an error; return its status."""
        return self.wait_for(lambda: _ended_with_error(self.status_of(name, version)))


@contextlib.contextmanager
def serving(suite: str, config_file: Path, *flags: str, **options) -> Iterator[Client]:
    """A server on ``config_file`` (plus ``flags``), stopped by SIGTERM on exit.

    ``options`` go to ``serverproc.running_server``.
    """
    all_flags = [f"--model_config_file={config_file}", *SERVER_FLAGS, *flags]
    with serverproc.running_server(suite, all_flags, **options) as server:
        with grpc.insecure_channel(server.address) as channel:
            yield Client(
                server=server,
                channel=channel,
                predictions=prediction_service_pb2_grpc.PredictionServiceStub(channel),
                models=model_service_pb2_grpc.ModelServiceStub(channel),
            )


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _expect(actual: T, expected: T) -> T:
    assert actual == expected
    return actual


def _ended_with_error(status: VersionStatus) -> VersionStatus:
    assert status.state == VersionStatus.END, status
    assert status.status.error_message, status
    return status


# --- one server for models a and b ----------------------------------------------


def config_a(root: Path, **overrides) -> ModelConfig:
    """Model a: versions 1 and 2, labelled stable and canary."""
    options = {"versions": (1, 2), "labels": STABLE_CANARY, **overrides}
    return model_config("a", root / "a", **options)


def config_b(root: Path) -> ModelConfig:
    """Model b: its latest version."""
    return model_config("b", root / "b")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Model a with versions 1 and 2, model b with version 7."""
    root = tmp_path_factory.mktemp("lifecycle")
    for base, version in [("a", 1), ("a", 2), ("b", 7)]:
        add_version(root / base, version)
    config = server_config(config_a(root), config_b(root))
    write_config_file(root / "models.config", config)
    return root


@pytest.fixture(scope="module")
def client(root) -> Iterator[Client]:
    with serving("official-lifecycle", root / "models.config") as running:
        yield running


def served_versions(client: Client) -> dict[str, int]:
    """Which version answers each way of addressing a and b."""
    return {
        "a@stable": client.predict("a", label="stable"),
        "a@canary": client.predict("a", label="canary"),
        "a@1": client.predict("a", version=1),
        "a@2": client.predict("a", version=2),
        "b": client.predict("b"),
    }


def test_requests_by_name_label_and_version(client):
    assert served_versions(client) == {
        "a@stable": 1,
        "a@canary": 2,
        "a@1": 1,
        "a@2": 2,
        "b": 7,
    }
    assert client.predict("a") == 2

    assert client.states("a") == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert client.states("b") == [(7, "AVAILABLE")]
    assert [s.version for s in client.statuses("a", label="stable")] == [2, 1]
    for service in ["", PREDICTION_SERVICE, "a", "b"]:
        assert client.health(service) == serverproc.SERVING, service


def test_unknown_label_is_invalid(client):
    err = rpc_error(lambda: client.predict("a", label="beta"))

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Unrecognized servable version label: beta"


def test_versions_swap_and_a_broken_one_is_retried_when_fixed(client, root):
    base = root / "b"

    add_version(base, 8)
    client.wait_for_states("b", [(8, "AVAILABLE"), (7, "END")])
    assert client.predict("b") == 8

    add_version(base, 9, MNIST_ONNX.read_bytes()[:1000])
    client.wait_for_states("b", [(9, "END"), (8, "AVAILABLE"), (7, "END")])
    broken = client.status_of("b", 9).status
    assert f"{base}/9/model.onnx: not a valid ONNX ModelProto" in broken.error_message
    assert broken.error_code != error_codes_pb2.OK
    assert client.predict("b") == 8

    replace_model_file(base, 9)
    client.wait_for_states("b", [(9, "AVAILABLE"), (8, "END"), (7, "END")])
    assert client.status_of("b", 9).status.error_message == ""
    assert client.predict("b") == 9

    remove_version(base, 9)
    client.wait_for_states("b", [(9, "END"), (8, "AVAILABLE"), (7, "END")])
    assert client.predict("b") == 8


@pytest.mark.parametrize(
    ("version", "model", "reason"),
    [
        (20, b"", "holds neither model.onnx nor saved_model.pb"),
        (
            21,
            (digits.DIGITS_DIR / "3.png").read_bytes(),
            "model.onnx: not a valid ONNX ModelProto",
        ),
    ],
    ids=["empty-directory", "png-named-model-onnx"],
)
def test_broken_version_leaves_the_previous_one_serving(
    client, root, version, model, reason
):
    base = root / "b"
    serving_version = client.predict("b")
    add_version(base, version, model)

    broken = client.wait_for_failure("b", version)
    assert f"{base}/{version}" in broken.status.error_message
    assert reason in broken.status.error_message
    assert client.status_of("b", serving_version).state == VersionStatus.AVAILABLE
    assert client.predict("b") == serving_version
    remove_version(base, version)


def test_model_without_versions_is_not_serving(client, root):
    base = root / "b"
    versions = sorted(int(path.name) for path in base.iterdir() if path.name.isdigit())
    for version in versions:
        remove_version(base, version)

    client.wait_for(lambda: _expect(client.health("b"), serverproc.NOT_SERVING))
    for service in ["", PREDICTION_SERVICE]:
        assert client.health(service) == serverproc.NOT_SERVING, service
    assert client.health("a") == serverproc.SERVING
    err = rpc_error(lambda: client.predict("b"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Latest(b)"

    for version in versions:
        add_version(base, version)
    client.wait_for(lambda: _expect(client.health(""), serverproc.SERVING))
    assert client.health("b") == serverproc.SERVING
    assert client.predict("b") == versions[-1]


@pytest.mark.parametrize(
    ("make_config", "message"),
    [
        (
            lambda root: server_config(config_a(root), config_a(root), config_b(root)),
            "Illegal to list model a multiple times in config list",
        ),
        (
            lambda root: server_config(config_a(root), model_config("b", "relative/b")),
            "Expected model b to have an absolute path or URI; "
            "got base_path()=relative/b",
        ),
        (
            lambda root: server_config(
                config_a(root, platform="tensorflow"), config_b(root)
            ),
            "Illegal to change a model's platform. For model a platform was onnx "
            "and new platform requested is tensorflow",
        ),
        (
            lambda root: ServerConfig(
                custom_model_config=any_pb2.Any(type_url="type.example.com/Custom")
            ),
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported",
        ),
    ],
    ids=["duplicate-name", "relative-path", "platform-change", "custom-config"],
)
def test_invalid_reload_is_refused_and_changes_nothing(
    client, root, make_config, message
):
    before = served_versions(client)

    err = rpc_error(lambda: client.reload(make_config(root)))

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == message
    assert served_versions(client) == before
    assert client.health("") == serverproc.SERVING


def test_reload_refuses_a_label_for_an_unavailable_version(client, root):
    before = served_versions(client)
    labels = {"stable": 1, "canary": 9}
    config = server_config(config_a(root, labels=labels), config_b(root))

    err = rpc_error(lambda: client.reload(config))

    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        "Request to assign label to version 9 of model a, "
        "which is not currently available for inference"
    )
    assert served_versions(client) == before


def test_reload_moves_a_label(client, root):
    labels = {"stable": 1, "canary": 1}

    client.reload(server_config(config_a(root, labels=labels), config_b(root)))

    assert client.predict("a", label="canary") == 1
    assert client.predict("a", label="stable") == 1


def test_reload_adds_and_removes_models(client, root):
    add_version(root / "c", 3)

    client.reload(server_config(config_b(root), model_config("c", root / "c")))

    assert client.predict("c") == 3
    assert client.health("c") == serverproc.SERVING
    assert client.health("") == serverproc.SERVING
    err = rpc_error(lambda: client.predict("a"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Latest(a)"
    assert rpc_error(lambda: client.health("a")).code() == grpc.StatusCode.NOT_FOUND


# --- servers of their own -------------------------------------------------------


def test_unreadable_version_leaves_the_previous_one_serving():
    if os.geteuid() != 0:
        pytest.skip("needs root to run the server as an unprivileged user")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run the server as another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user 'nobody' to run the server as")
    as_nobody = [
        setpriv,
        f"--reuid={nobody.pw_uid}",
        f"--regid={nobody.pw_gid}",
        "--clear-groups",
    ]

    with tempfile.TemporaryDirectory(prefix="ferroserve-lifecycle-") as tmp:
        root = Path(tmp)
        base = root / "m"
        add_version(base, 1)
        config_file = root / "models.config"
        write_config_file(config_file, server_config(model_config("m", base)))
        _open_to_everyone(root)
        binary = serverproc.BINARY
        if not _others_can_execute(binary):
            binary = root / "ferroserve"
            shutil.copy(serverproc.BINARY, binary)
            binary.chmod(0o755)

        with serving(
            "official-lifecycle-unprivileged",
            config_file,
            binary=binary,
            wrapper=as_nobody,
        ) as client:
            assert client.predict("m") == 1

            unreadable = add_version(base, 2, mode=0)
            broken = client.wait_for_failure("m", 2)
            assert client.states("m") == [(2, "END"), (1, "AVAILABLE")]
            assert client.predict("m") == 1

            unreadable.chmod(0o755)
            client.wait_for_states("m", [(2, "AVAILABLE"), (1, "END")])
            assert client.predict("m") == 2

    # The failure names the directory and why it could not be loaded.
    assert str(unreadable) in broken.status.error_message
    assert "permission denied" in broken.status.error_message.lower()


def test_config_file_is_polled(tmp_path):
    add_version(tmp_path / "a", 1)
    add_version(tmp_path / "d", 4)
    config_file = tmp_path / "models.config"
    write_config_file(config_file, server_config(model_config("a", tmp_path / "a")))

    with serving(
        "official-lifecycle-config-poll",
        config_file,
        "--model_config_file_poll_wait_seconds=1",
    ) as client:
        assert client.predict("a") == 1
        err = rpc_error(lambda: client.predict("d"))
        assert err.code() == grpc.StatusCode.NOT_FOUND

        write_config_file(
            config_file,
            server_config(
                model_config("a", tmp_path / "a"), model_config("d", tmp_path / "d")
            ),
        )
        assert client.wait_for(lambda: client.predict("d")) == 4
        assert client.health("d") == serverproc.SERVING

        write_config_file(config_file, "model_config_list { config { name: 'a' ")
        client.wait_for(lambda: _check_error_logged(client.server, config_file))
        assert client.predict("a") == 1
        assert client.predict("d") == 4
        assert client.health("") == serverproc.SERVING


def _check_error_logged(server: serverproc.Server, about: Path) -> None:
    """Assert that an ERROR line of the server's log names ``about``."""
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert any(" ERROR " in line and str(about) in line for line in log.splitlines())


def _open_to_everyone(root: Path) -> None:
    """Make a tree readable (and its directories searchable) by every user."""
    root.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            (Path(dirpath) / name).chmod(0o755)
        for name in filenames:
            (Path(dirpath) / name).chmod(0o644)


def _others_can_execute(path: Path) -> bool:
    """Whether users other than the owner may run ``path``."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])
