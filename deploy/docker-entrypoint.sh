#!/bin/sh
# Entrypoint of the ferroserve image, shaped like tensorflow/serving's:
# serves $MODEL_BASE_PATH/$MODEL_NAME on gRPC port 8500 and REST port 8501,
# and appends every argument given to the container ("docker run IMAGE
# --flag=value ..."). A flag given twice takes its last value, so arguments
# may override the ones set here.
set -eu

MODEL_NAME="${MODEL_NAME:-model}"
MODEL_BASE_PATH="${MODEL_BASE_PATH:-/models}"

exec /usr/local/bin/ferroserve \
    --port=8500 \
    --rest_api_port=8501 \
    --model_name="${MODEL_NAME}" \
    --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" \
    "$@"
