# The static musl binary, alone in an image FROM scratch (its CA roots are compiled in).
# Build: docker build -t fifo2kinesis .   Run it as a sidecar: see contrib/docker-compose.yml.
# For another platform: docker build --platform linux/arm64 (or linux/arm/v7) -t fifo2kinesis .
# The build stage runs on the build machine's platform and cross-compiles with
# scripts/build-static, which checks the binary under qemu-user.
FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG BUILDARCH
ARG TARGETARCH
ARG TARGETVARIANT
# The cross compilers below are x86_64 Debian's.
RUN [ "$BUILDARCH" = amd64 ] || { echo "build on an x86_64 machine (this one is $BUILDARCH)"; exit 1; } \
 && case "$TARGETARCH$TARGETVARIANT" in \
      amd64) debs="musl-tools" ;; \
      arm64) debs="gcc-aarch64-linux-gnu qemu-user-static" ;; \
      armv7) dpkg --add-architecture armhf; debs="gcc-arm-linux-gnueabihf qemu-user-static musl-dev:armhf" ;; \
      *) echo "no build for $TARGETARCH$TARGETVARIANT (amd64, arm64, arm/v7)"; exit 1 ;; \
    esac \
 && apt-get update \
 && apt-get install -y --no-install-recommends file $debs \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN case "$TARGETARCH$TARGETVARIANT" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      armv7) target=armv7-unknown-linux-musleabihf; \
             rustup toolchain install nightly --profile minimal --component rust-src ;; \
    esac \
 && scripts/build-static "$target" \
 && mkdir -p /out/run/fifo2kinesis /out/var/lib/fifo2kinesis \
 && cp "target/$target/release/fifo2kinesis" /out/fifo2kinesis

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
