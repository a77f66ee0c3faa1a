"""The Prometheus page on the REST port, read by the official Prometheus
client library's text-format parser."""

from __future__ import annotations

import json
import urllib.request

import digits
import pytest
import serverproc
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def rest_server():
    rest_port = serverproc.free_loopback_port()
    flags = (*serverproc.MNIST_FLAGS, f"--rest_api_port={rest_port}")
    with serverproc.running_server("metrics", flags):
        yield f"http://127.0.0.1:{rest_port}"


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
        return json.load(answer)


def test_metrics_page_parses_and_counts_predictions(rest_server):
    path = digits.digit_images()[0]
    answer = post(f"{rest_server}/v1/models/mnist:predict", {"instances": [digits.load_image(path).tolist()]})
    assert len(answer["predictions"]) == 1
    probabilities = answer["predictions"][0]
    assert probabilities.index(max(probabilities)) == digits.label_of(path)
    with urllib.request.urlopen(f"{rest_server}/monitoring/prometheus/metrics", timeout=TIMEOUT_S) as page:
        assert page.headers["Content-Type"].startswith("text/plain")
        text = page.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {
        (s.labels["model_name"], s.labels["status"]): s.value
        for s in families[":tensorflow:serving:request_count"].samples
    }
    assert counts[("mnist", "OK")] >= 1
    latency = families[":tensorflow:serving:request_latency"]
    assert latency.type == "histogram"
    rest_counts = [
        s.value
        for s in latency.samples
        if s.name.endswith("_count") and s.labels.get("entrypoint") == "REST"
    ]
    assert rest_counts and rest_counts[0] >= 1
    assert families["process_start_time_seconds"].samples[0].value > 0
