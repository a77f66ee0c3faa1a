"""The bundled Rust client, examples/predict_client.rs, against the server.

scripts/test.sh builds it (``cargo build --release --examples``) before the
Python suites run.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import serverproc

CLIENT = serverproc.REPO_ROOT / "target" / "release" / "examples" / "predict_client"
DIGITS = sorted((serverproc.REPO_ROOT / "examples" / "digits").glob("*.png"))
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
