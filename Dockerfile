# syntax=docker/dockerfile:1
# tierwatch: a multi-stage build. The builder compiles the release binary (librdkafka is vendored
# and built from source here; OpenSSL, zstd and SQLite are the distribution's libraries); the runtime image holds the binary, the default
# rescorer model and the CA bundle, and runs as a fixed non-root user.
#
#   docker build -t tierwatch:local .
#   docker run --rm tierwatch:local check-config --config /etc/tierwatch/tierwatch.toml
#
# BuildKit (the default builder since Docker 23) keeps the cargo registry and the target directory
# in cache mounts, so a rebuild after a source change recompiles the tierwatch crate only.

# The toolchain the project is built and tested with (`rustc --version`: 1.95.0; the crate's MSRV
# is 1.85). Bookworm, so the binary's glibc matches the runtime image.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS builder
# librdkafka's configure/make (C and C++); it and sqlx link the system's OpenSSL, zstd, SQLite and
# zlib (the -dev packages here, the libraries in the runtime stage). cmake for crates that build
# with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake perl pkg-config zlib1g-dev \
      libssl-dev libzstd-dev libsqlite3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What the build reads: the workspace manifests, .cargo/config.toml (links the system SQLite), the
# crate, the migrations and schemas it embeds, the demo's embedded model and the example
# configuration a unit test includes. tests/ only because the manifest names its files.
COPY .cargo .cargo
COPY Cargo.toml Cargo.lock tierwatch.example.toml ./
COPY daemon daemon
COPY tests tests
COPY migrations migrations
COPY schemas schemas
COPY models models
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin tierwatch \
 && install -D -m 0755 target/release/tierwatch /out/tierwatch \
 && strip --strip-debug /out/tierwatch

FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to a managed Kafka or Postgres (system roots). The shared libraries the
# binary links: OpenSSL (librdkafka's TLS), zstd, SQLite (the embedded store) and zlib (already in
# the base image; named so that a slimmer base is not chosen by mistake).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libzstd1 libsqlite3-0 zlib1g \
 && rm -rf /var/lib/apt/lists/*
# A fixed UID/GID, so a Kubernetes securityContext (runAsUser) and file permissions can name it.
RUN groupadd --system --gid 10001 tierwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin tierwatch
COPY --from=builder /out/tierwatch /usr/local/bin/tierwatch
# The default rescorer and its sidecar (`[rescore] model_path` points here).
COPY models/rescorer.onnx models/rescorer.json /usr/share/tierwatch/models/
USER 10001:10001
# The HTTP port (`/metrics`, `/healthz`, `/readyz`); the configuration must listen on it
# (`[http] listen = "0.0.0.0:9464"`).
EXPOSE 9464
# No curl or wget in the image: bash's /dev/tcp sends the request, `head` reads the status line.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["tierwatch"]
CMD ["run", "--config", "/etc/tierwatch/tierwatch.toml"]
