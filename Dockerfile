# The static musl binary, alone in an image FROM scratch (its CA roots are compiled in).
# Build: docker build -t fifo2kinesis .   Run it as a sidecar: see contrib/docker-compose.yml.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools file \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/build-static \
 && mkdir -p /out/run/fifo2kinesis /out/var/lib/fifo2kinesis \
 && cp target/x86_64-unknown-linux-musl/release/fifo2kinesis /out/fifo2kinesis

FROM scratch
COPY --from=build /out/fifo2kinesis /fifo2kinesis
# The FIFO's and the failed attempts' directories, owned by the user the daemon runs as.
COPY --from=build --chown=65534:65534 /out/run/fifo2kinesis /run/fifo2kinesis
COPY --from=build --chown=65534:65534 /out/var/lib/fifo2kinesis /var/lib/fifo2kinesis
USER 65534:65534
ENV FIFO2KINESIS_FIFO_NAME=/run/fifo2kinesis/fifo2kinesis.pipe \
    FIFO2KINESIS_FAILED_ATTEMPTS_DIR=/var/lib/fifo2kinesis
VOLUME ["/run/fifo2kinesis", "/var/lib/fifo2kinesis"]
ENTRYPOINT ["/fifo2kinesis"]
