"""The deployment files (Dockerfile, deploy/) against the binary they deploy.

No Docker and no cluster: every YAML document under deploy/ is parsed, the
ferroserve flags that the Dockerfile's entrypoint and the manifests pass are
collected, each is checked against ``ferroserve --help``, and the release
binary is started with them (ports moved to free loopback ports, model paths
to a temporary copy of the example model) to check that none is logged as
not honoured or ignored. Ports, probes and drain times are checked against
those flags.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
import serverproc
import yaml

REPO_ROOT = serverproc.REPO_ROOT
DEPLOY = REPO_ROOT / "deploy"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"
IMAGE_BINARY = "/usr/local/bin/ferroserve"
EXAMPLE_MODEL = REPO_ROOT / "examples" / "models" / "mnist" / "1" / "model.onnx"

GRPC_PORT = 8500
REST_PORT = 8501
KSERVE_MODEL_DIR = "/mnt/models"
# --shutdown_delay_seconds and --shutdown_grace_seconds when not given.
DEFAULT_SHUTDOWN_DELAY_S = 5
DEFAULT_SHUTDOWN_GRACE_S = 25

# The start-up warnings of Flags::not_honoured (src/config.rs).
NOT_HONOURED_WORDS = ("not yet honoured", "ignored")
STARTUP_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 10.0

Flags = list[tuple[str, str | None]]


# --- reading the files -------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _documents() -> list[tuple[Path, dict]]:
    out = []
    for path in _yaml_files():
        with path.open(encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    assert isinstance(doc, dict), f"{path}: a document is not a mapping"
                    out.append((path, doc))
    return out


DOCUMENTS = _documents()


def _of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in DOCUMENTS if doc.get("kind") == kind]


def _one(kind: str) -> dict:
    docs = _of_kind(kind)
    assert len(docs) == 1, f"expected one {kind} under deploy/, found {len(docs)}"
    return docs[0]


def _help_flags() -> dict[str, bool]:
    """Flag names of ``ferroserve --help``, each with whether it is a boolean
    (``--x[=<X>]``: its value is never a separate argument)."""
    result = subprocess.run(
        [str(serverproc.BINARY), "--help"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    flags = {}
    for match in re.finditer(r"^\s+--([a-z0-9_]+)(\[=)?", result.stdout, re.MULTILINE):
        flags[match.group(1)] = match.group(2) is not None
    assert "model_base_path" in flags and "port" in flags, result.stdout
    return flags


@pytest.fixture(scope="module")
def known_flags() -> dict[str, bool]:
    if not serverproc.BINARY.is_file():
        pytest.fail(f"{serverproc.BINARY} missing: build it with `cargo build --release --locked`")
    return _help_flags()


def _parse_flags(argv: Sequence[str], known: dict[str, bool]) -> Flags:
    """``--name=value`` and ``--name value`` pairs of an argument list."""
    out: Flags = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        assert arg.startswith("--"), f"unexpected argument {arg!r} in {list(argv)}"
        name, eq, value = arg[2:].partition("=")
        if eq:
            out.append((name, value))
        elif known.get(name, False) or i + 1 == len(argv) or argv[i + 1].startswith("--"):
            out.append((name, None))
        else:
            out.append((name, argv[i + 1]))
            i += 1
        i += 1
    return out


def _last(flags: Flags, name: str) -> str | None:
    """The value the server uses: a flag given twice takes its last value."""
    values = [value for flag, value in flags if flag == name]
    return values[-1] if values else None


def _entrypoint_argv(env: dict[str, str], args: Sequence[str] = ()) -> list[str]:
    """The argv the image's entrypoint execs (binary path first), by running
    the script with ``printf`` in the place of the binary."""
    script = ENTRYPOINT.read_text(encoding="utf-8")
    assert f"exec {IMAGE_BINARY}" in script, f"{ENTRYPOINT} does not exec {IMAGE_BINARY}"
    probe = script.replace(f"exec {IMAGE_BINARY}", f"exec printf '%s\\n' {IMAGE_BINARY}")
    result = subprocess.run(
        ["sh", "-c", probe, "docker-entrypoint.sh", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.splitlines()


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in _dockerfile():
        if word == "ENV":
            for item in shlex.split(rest):
                key, eq, value = item.partition("=")
                assert eq, f"Dockerfile: use ENV KEY=value, not {rest!r}"
                env[key] = value
    return env


def _deployment_container() -> dict:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _deployment_argv() -> list[str]:
    """What the Deployment's container runs: the image entrypoint with the
    image's and the container's environment, plus the container's args."""
    container = _deployment_container()
    assert "command" not in container, "the Deployment is meant to use the image's entrypoint"
    env = _dockerfile_env()
    env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
    return _entrypoint_argv(env, [str(a) for a in container.get("args", [])])


def _kserve_container() -> dict:
    runtime = _one("ServingRuntime")
    containers = runtime["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _kserve_argv() -> list[str]:
    container = _kserve_container()
    command = [str(c) for c in container.get("command", [])]
    assert command == [IMAGE_BINARY], f"ServingRuntime command: {command}"
    return command + [str(a) for a in container.get("args", [])]


def _all_argvs() -> dict[str, list[str]]:
    return {
        "Dockerfile entrypoint": _entrypoint_argv(_dockerfile_env()),
        "Deployment": _deployment_argv(),
        "ServingRuntime": _kserve_argv(),
    }


# --- running the binary ------------------------------------------------------


@contextlib.contextmanager
def _run_until_serving(command: Sequence[str], env: dict[str, str], log_path: Path,
                       grpc_port: int, rest_port: int) -> Iterator[str]:
    """Start ``command``; yield its log once health "" is SERVING and the REST
    port is open; then SIGTERM: health must turn NOT_SERVING (the drain of
    --shutdown_delay_seconds), and a second SIGTERM must end it with 0."""
    serverproc.LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        log.write(f"$ {shlex.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(command),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    address = f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with grpc.insecure_channel(address) as channel:
            status = _poll_health(process, channel, log_path, serverproc.SERVING, deadline)
            assert status == serverproc.SERVING
            _wait_for_port(process, rest_port, log_path, deadline)
            yield log_path.read_text(encoding="utf-8", errors="replace")
            process.send_signal(signal.SIGTERM)
            _poll_health(process, channel, log_path, serverproc.NOT_SERVING,
                         time.monotonic() + 5.0)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=EXIT_TIMEOUT_S)
        assert code == 0, f"exit status {code}\n" + serverproc.log_tail(log_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _poll_health(process, channel, log_path: Path, want: int, deadline: float) -> int:
    last = "none"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}\n" + serverproc.log_tail(log_path))
        try:
            status = serverproc.health_check(
                channel, "", timeout=max(0.1, min(1.0, deadline - time.monotonic())),
                wait_for_ready=False,
            )
        except grpc.RpcError as err:
            last = f"{err.code().name}: {err.details()}"
        else:
            if status == want:
                return status
            last = f"status {status}"
        time.sleep(0.05)
    pytest.fail(f"health \"\" never answered {want} (last: {last})\n" + serverproc.log_tail(log_path))


def _wait_for_port(process, port: int, log_path: Path, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"REST port {port} never opened\n" + serverproc.log_tail(log_path))
        time.sleep(0.05)


def _unhonoured_lines(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if any(words in line for words in NOT_HONOURED_WORDS)]


def _server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUST_LOG", "FERROSERVE_"))}
    env.update(extra or {})
    return env


# --- the tests ---------------------------------------------------------------


def test_every_yaml_document_parses_and_is_a_kubernetes_object():
    files = {path.relative_to(DEPLOY).as_posix() for path, _ in DOCUMENTS}
    assert any(f.startswith("kubernetes/") for f in files), files
    assert any(f.startswith("kserve/") for f in files), files
    for path, doc in DOCUMENTS:
        assert doc.get("apiVersion") and doc.get("kind"), path
        assert doc.get("metadata", {}).get("name"), path
    kinds = {doc["kind"]: doc["apiVersion"] for _, doc in DOCUMENTS}
    assert kinds["Deployment"] == "apps/v1"
    assert kinds["Service"] == "v1"
    assert kinds["HorizontalPodAutoscaler"] == "autoscaling/v2"
    assert kinds["PodDisruptionBudget"] == "policy/v1"
    assert kinds["ServingRuntime"] == "serving.kserve.io/v1alpha1"
    assert kinds["InferenceService"] == "serving.kserve.io/v1beta1"


def test_dockerfile_builds_locked_and_runs_the_entrypoint_unprivileged():
    instructions = _dockerfile()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2, "the Dockerfile is meant to be multi-stage"
    assert froms[0].split()[0] == "rust:1.95-bookworm"
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"cargo build --release --locked", runs)
    exposed = {int(p.split("/")[0]) for word, rest in instructions if word == "EXPOSE"
               for p in rest.split()}
    assert exposed == {GRPC_PORT, REST_PORT}
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "the image runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it.
    assert user.isdigit() and int(user) > 0
    entrypoints = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    entrypoint = json.loads(entrypoints[0])
    assert any(rest.split()[-1] == entrypoint[0] and "deploy/docker-entrypoint.sh" in rest
               for word, rest in instructions if word == "COPY"), entrypoint
    assert _dockerfile_env() == {"MODEL_NAME": "model", "MODEL_BASE_PATH": "/models"}
    ignored = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert "target/" in ignored or "target" in ignored


def test_entrypoint_serves_like_the_tensorflow_serving_image(known_flags):
    assert ENTRYPOINT.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK)
    argv = _entrypoint_argv({})
    assert argv[0] == IMAGE_BINARY
    flags = _parse_flags(argv[1:], known_flags)
    assert _last(flags, "model_name") == "model"
    assert _last(flags, "model_base_path") == "/models/model"
    assert _last(flags, "port") == str(GRPC_PORT)
    assert _last(flags, "rest_api_port") == str(REST_PORT)

    argv = _entrypoint_argv({"MODEL_NAME": "my model", "MODEL_BASE_PATH": "/data"},
                            ["--enable_batching=false", "--port", "9000"])
    flags = _parse_flags(argv[1:], known_flags)
    assert _last(flags, "model_name") == "my model"
    assert _last(flags, "model_base_path") == "/data/my model"
    # Extra arguments come last, so they win.
    assert argv[-3:] == ["--enable_batching=false", "--port", "9000"]
    assert _last(flags, "port") == "9000"


def test_every_flag_passed_is_known_to_the_binary(known_flags):
    for where, argv in _all_argvs().items():
        for name, _ in _parse_flags(argv[1:], known_flags):
            assert name in known_flags, f"{where}: --{name} is not a ferroserve flag"


def test_the_log_check_sees_an_unhonoured_flag(tmp_path):
    """The wording the other tests look for is the one the binary logs."""
    port = serverproc.free_loopback_port()
    command = [str(serverproc.BINARY), f"--port={port}", "--rest_api_port=0",
               f"--model_base_path={tmp_path / 'missing'}", "--enable_batching"]
    log_path = serverproc.LOG_DIR / "deploy-wording-server.log"
    serverproc.LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=_server_env(),
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            lines = _unhonoured_lines(log_path.read_text(encoding="utf-8", errors="replace"))
            if lines:
                assert any("enable_batching" in line for line in lines), lines
                break
            time.sleep(0.05)
        else:
            pytest.fail("no not-honoured warning for --enable_batching\n"
                        + serverproc.log_tail(log_path))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=EXIT_TIMEOUT_S)


def test_deployment_flags_are_honoured(tmp_path, known_flags):
    """The image entrypoint, run as the Deployment runs it, with the model
    volume replaced by a copy of the example model."""
    container = _deployment_container()
    env = _dockerfile_env()
    env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
    models = tmp_path / "models"
    (models / env["MODEL_NAME"] / "1").mkdir(parents=True)
    shutil.copy(EXAMPLE_MODEL, models / env["MODEL_NAME"] / "1" / "model.onnx")
    env["MODEL_BASE_PATH"] = str(models)

    grpc_port, rest_port = serverproc.free_loopback_ports(2)
    script = tmp_path / "docker-entrypoint.sh"
    script.write_text(
        ENTRYPOINT.read_text(encoding="utf-8").replace(IMAGE_BINARY, str(serverproc.BINARY)),
        encoding="utf-8",
    )
    command = ["sh", str(script),
               *[str(a) for a in container.get("args", [])],
               f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
    log_path = serverproc.LOG_DIR / "deploy-deployment-server.log"
    with _run_until_serving(command, _server_env(env), log_path, grpc_port, rest_port) as log:
        assert not _unhonoured_lines(log), "\n".join(_unhonoured_lines(log))


def test_kserve_runtime_flags_are_honoured(tmp_path, known_flags):
    """The runtime's command line with /mnt/models holding model.onnx itself,
    as KServe's storage initializer leaves it."""
    shutil.copy(EXAMPLE_MODEL, tmp_path / "model.onnx")
    grpc_port, rest_port = serverproc.free_loopback_ports(2)
    argv = []
    for name, value in _parse_flags(_kserve_argv()[1:], known_flags):
        if name in ("port", "rest_api_port"):
            continue
        if name == "model_base_path":
            assert value == KSERVE_MODEL_DIR
            value = str(tmp_path)
        if name == "model_name":
            value = value.replace("{{.Name}}", _one("InferenceService")["metadata"]["name"])
        argv.append(f"--{name}" if value is None else f"--{name}={value}")
    command = [str(serverproc.BINARY), f"--port={grpc_port}", f"--rest_api_port={rest_port}", *argv]
    log_path = serverproc.LOG_DIR / "deploy-kserve-server.log"
    with _run_until_serving(command, _server_env(), log_path, grpc_port, rest_port) as log:
        assert not _unhonoured_lines(log), "\n".join(_unhonoured_lines(log))


def test_deployment_ports_and_probes_match_the_flags(known_flags):
    flags = _parse_flags(_deployment_argv()[1:], known_flags)
    port, rest_port = int(_last(flags, "port")), int(_last(flags, "rest_api_port"))
    assert (port, rest_port) == (GRPC_PORT, REST_PORT)

    container = _deployment_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": port, "http": rest_port}

    for probe in ("startupProbe", "readinessProbe"):
        grpc_probe = container[probe]["grpc"]
        assert grpc_probe["port"] == port, probe
        # The whole server's status, which goes NOT_SERVING during a drain.
        assert grpc_probe.get("service", "") == "", probe
    liveness = container["livenessProbe"]
    assert "grpc" not in liveness and "httpGet" not in liveness
    assert liveness["tcpSocket"]["port"] == port

    service = _one("Service")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"grpc", "http"}
    for name, want in (("grpc", port), ("http", rest_port)):
        target = by_name[name].get("targetPort", by_name[name]["port"])
        if isinstance(target, str):
            target = ports[target]
        assert target == want, name
        assert by_name[name]["port"] == want, name
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_deployment_drains_before_it_is_killed(known_flags):
    flags = _parse_flags(_deployment_argv()[1:], known_flags)
    delay = int(_last(flags, "shutdown_delay_seconds") or DEFAULT_SHUTDOWN_DELAY_S)
    grace = int(_last(flags, "shutdown_grace_seconds") or DEFAULT_SHUTDOWN_GRACE_S)
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > delay + grace


def test_deployment_is_hardened_and_mounts_the_models(known_flags):
    deployment = _one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _deployment_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"].get("allowPrivilegeEscalation") is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys(), kind

    flags = _parse_flags(_deployment_argv()[1:], known_flags)
    base = Path(_last(flags, "model_base_path"))
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/models" in mounts and base.parent == Path("/models")
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim in {doc["metadata"]["name"] for doc in _of_kind("PersistentVolumeClaim")}

    hpa = _one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    pdb = _one("PodDisruptionBudget")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb.get("minAvailable", 0) < hpa["minReplicas"]


def test_kserve_runtime_matches_kserve_conventions(known_flags):
    runtime = _one("ServingRuntime")
    container = _kserve_container()
    assert container["name"] == "kserve-container"
    flags = _parse_flags(_kserve_argv()[1:], known_flags)
    assert _last(flags, "model_base_path") == KSERVE_MODEL_DIR
    assert _last(flags, "model_name") == "{{.Name}}"
    port, rest_port = int(_last(flags, "port")), int(_last(flags, "rest_api_port"))
    # KServe sends the V1 (REST) protocol to 8080.
    assert rest_port == 8080
    assert {p["containerPort"] for p in container.get("ports", [])} <= {port, rest_port}
    spec = runtime["spec"]
    assert {"v1", "grpc-v1"} <= set(spec["protocolVersions"])
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    assert {"onnx", "tensorflow"} <= formats
    annotations = spec.get("annotations", {})
    if "prometheus.kserve.io/port" in annotations:
        assert int(annotations["prometheus.kserve.io/port"]) == rest_port
    assert container["securityContext"]["runAsNonRoot"] is True

    isvc = _one("InferenceService")["spec"]["predictor"]
    assert isvc["model"]["runtime"] == runtime["metadata"]["name"]
    assert isvc["model"]["modelFormat"]["name"] in formats
    if "terminationGracePeriodSeconds" in isvc:
        delay = int(_last(flags, "shutdown_delay_seconds") or DEFAULT_SHUTDOWN_DELAY_S)
        grace = int(_last(flags, "shutdown_grace_seconds") or DEFAULT_SHUTDOWN_GRACE_S)
        assert isvc["terminationGracePeriodSeconds"] > delay + grace
