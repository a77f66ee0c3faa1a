# syntax=docker/dockerfile:1
#
# ferroserve as a drop-in for the tensorflow/serving image: same ports (gRPC
# 8500, REST 8501), same MODEL_NAME / MODEL_BASE_PATH variables, and any
# extra argument is passed to the server.
#
#   docker build -t ferroserve .
#   docker run --rm -p 8500:8500 -p 8501:8501 \
#     -v "$PWD/examples/models/mnist:/models/mnist:ro" -e MODEL_NAME=mnist ferroserve

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Only what the release binary is built from; .dockerignore keeps the rest
# of the build context small.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
RUN cargo build --release --locked --bin ferroserve \
    && install -D -m 0755 target/release/ferroserve /out/ferroserve

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ferroserve \
    && useradd --system --uid 10001 --gid ferroserve --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin ferroserve \
    && mkdir -p /models
COPY --from=builder /out/ferroserve /usr/local/bin/ferroserve
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# As the tensorflow/serving image: the model is $MODEL_BASE_PATH/$MODEL_NAME.
ENV MODEL_NAME=model \
    MODEL_BASE_PATH=/models
# gRPC (health service included) and REST (with /monitoring/prometheus/metrics).
EXPOSE 8500 8501
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
