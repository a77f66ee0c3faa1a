"""grpc.health.v1.Health/Check, called with hand-encoded messages."""

from __future__ import annotations

import pytest
import serverproc


@pytest.mark.parametrize(
    "service",
    ["", "tensorflow.serving.PredictionService", "mnist"],
    ids=["whole-server", "PredictionService", "mnist"],
)
def test_health_check_serving(channel, service):
    assert serverproc.health_check(channel, service) == serverproc.SERVING
