"""The bundled Rust client, examples/predict_client.rs, against the server.

scripts/test.sh builds it (``cargo build --release --examples``) before the
Python suites run.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import urllib.request

import pytest
import serverproc
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

CLIENT = serverproc.REPO_ROOT / "target" / "release" / "examples" / "predict_client"
DIGITS = sorted((serverproc.REPO_ROOT / "examples" / "digits").glob("*.png"))
DIGIT_3 = serverproc.REPO_ROOT / "examples" / "digits" / "3.png"
TIMEOUT_S = 60


def run_client(*args: str) -> subprocess.CompletedProcess:
    if not CLIENT.is_file():
        pytest.fail(f"{CLIENT} is missing: build it with cargo build --release --examples")
    return subprocess.run(
        [str(CLIENT), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=serverproc.REPO_ROOT,
    )


def test_client_classifies_every_committed_digit(server):
    result = run_client("--server", server.address, "--model", "mnist", *map(str, DIGITS))
    assert result.returncode == 0, result.stderr
    predicted = re.findall(r"^(\S+): class (\d) \(p=", result.stdout, flags=re.MULTILINE)
    assert len(predicted) == len(DIGITS) == 10
    for path, label in predicted:
        assert path.endswith(f"{label}.png"), result.stdout
    assert result.stdout.count("probabilities: 0:") == 10


def test_client_prints_metadata_and_status(server):
    result = run_client("--server", server.address, "--model", "mnist", "--metadata")
    assert result.returncode == 0, result.stderr
    assert "signature serving_default (tensorflow/serving/predict)" in result.stdout
    assert "input image: image:0 DT_FLOAT [-1,28,28,1]" in result.stdout
    assert "output probabilities: probabilities:0 DT_FLOAT [-1,10]" in result.stdout
    result = run_client("--server", server.address, "--model", "mnist", "--status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "model mnist version 1: AVAILABLE"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--server", "127.0.0.1:1", str(DIGITS[0])), "cannot connect to http://127.0.0.1:1"),
        (("--model", "nope", str(DIGITS[0])), "NotFound: Servable not found for request: Latest(nope)"),
        (("--model", "mnist", "README.md"), "README.md is not a PNG"),
    ],
)
def test_client_errors_are_one_line_and_non_zero(server, args, needle):
    if args[0] != "--server":
        args = ("--server", server.address, *args)
    result = run_client(*args)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "panicked" not in result.stderr


def summary(stdout: str) -> dict[str, str]:
    """The ``key=value`` fields of load mode's ``requests=...`` summary line."""
    lines = [line for line in stdout.splitlines() if line.startswith("requests=")]
    assert len(lines) == 1, stdout
    return dict(field.split("=", 1) for field in lines[0].split())


def prometheus_page(server: serverproc.Server) -> dict[str, Metric]:
    """The metric families of a server's Prometheus page (on its REST port)."""
    url = f"http://{server.rest_address}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as page:
        return {family.name: family for family in text_string_to_metric_families(page.read().decode())}


def test_load_mode_calls_several_servers_in_turn():
    """300 requests round-robin over three servers: 100 Predict calls reach each,
    as the client's summary and each server's request counter say."""
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(serverproc.running_server(f"predict-client-{name}", rest_api=True))
            for name in "abc"
        ]
        addresses = [server.address for server in servers]
        result = run_client(
            "--server", ",".join(addresses), "--model", "mnist", "--concurrency", "6", "--requests", "300", str(DIGIT_3)
        )
        assert result.returncode == 0, result.stdout + result.stderr
        fields = summary(result.stdout)
        assert (fields["requests"], fields["ok"], fields["failed"]) == ("300", "300", "0"), result.stdout
        assert "error code=" not in result.stdout
        per_server = re.findall(r"^server address=(\S+) requests=(\d+)$", result.stdout, flags=re.MULTILINE)
        assert per_server == [(address, "100") for address in addresses], result.stdout
        for server in servers:
            families = prometheus_page(server)
            counts = {
                (s.labels["model_name"], s.labels["status"]): s.value
                for s in families[":tensorflow:serving:request_count"].samples
            }
            assert counts == {("mnist", "OK"): 100}, (server.address, counts)
            predicts = sum(
                s.value
                for s in families[":tensorflow:serving:request_latency"].samples
                if s.name.endswith("_count")
                and (s.labels["model_name"], s.labels["API"], s.labels["entrypoint"]) == ("mnist", "Predict", "GRPC")
            )
            assert predicts == 100, server.address


def test_load_mode_writes_a_latency_histogram(server, tmp_path):
    svg = tmp_path / "latency.svg"
    result = run_client(
        "--server", server.address, "--model", "mnist", "--concurrency", "2", "--requests", "20",
        "--histogram-svg", str(svg), str(DIGIT_3),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fields = summary(result.stdout)
    assert (fields["requests"], fields["failed"]) == ("20", "0"), result.stdout
    text = svg.read_text(encoding="utf-8")
    assert text.startswith("<svg"), text[:200]
    assert text.rstrip().endswith("</svg>")
    assert "20 requests, 0 failed" in text
