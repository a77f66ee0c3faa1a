"""The Node.js client, tests/node/predict_client.mjs, against the server.

The client loads proto/ at run time with @grpc/proto-loader, so it checks that
our .proto files work for a third language with no generated code.  Its
packages come from tests/node/package-lock.json: scripts/test.sh installs them
with ``npm ci``; a missing install fails the test rather than skipping it, so
that a broken setup cannot pass unnoticed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import serverproc

NODE_DIR = serverproc.REPO_ROOT / "tests" / "node"
CLIENT = NODE_DIR / "predict_client.mjs"
TIMEOUT_S = 60


def test_node_client_checks_pass(server):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 20 or later")
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(f"{NODE_DIR / 'node_modules'} is missing: run `npm ci --prefix tests/node`")

    result = subprocess.run(
        [node, str(CLIENT), "--target", server.address],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=serverproc.REPO_ROOT,
        check=False,
    )

    assert result.returncode == 0, (
        f"node client exited with status {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
    )
    assert result.stdout.rstrip().endswith(" passed, 0 failed"), result.stdout
