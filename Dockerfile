# syntax=docker/dockerfile:1
# The auditrail sidecar image:
#
#   docker build -t auditrail:0.1.0 .
#
# Expected size: about 32 MB uncompressed, 12-13 MB compressed: the distroless base (glibc,
# libgcc, libstdc++, libssl3, zlib, CA certificates, tzdata) is about 23-25 MB and the binary
# about 8 MB (librdkafka linked in statically; OpenSSL and zlib dynamically). The release
# profile's line tables (`debug = "line-tables-only"`) would add 27 MB: they are stripped
# here, symbols are kept, so a panic's backtrace still names the functions.
#
# Why this base: with rdkafka's `ssl` feature the binary links glibc, libssl3/libcrypto3 and
# zlib dynamically. gcr.io/distroless/cc-debian12 has glibc, libgcc and libssl3 but no zlib1g;
# cc-debian13 has all of them. So both stages are Debian 13 (trixie): the binary never needs a
# newer glibc than the runtime has. No shell, no package manager; the `nonroot` tag and USER
# run it as 65532:65532, the UID the Helm chart's securityContext expects.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-trixie AS build
# librdkafka is built from source by rdkafka-sys (its own configure script, no cmake), against
# the system OpenSSL and zlib. Versions come from the pinned Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies first, built against placeholder sources: this layer (librdkafka alone takes
# minutes) is rebuilt only when the manifest, the lock file or the benches change. Cargo needs
# every target the manifest declares to exist, hence benches/.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
# librdkafka with auditrail's fix ([patch.crates-io] in Cargo.toml; vendor/rdkafka-sys/AUDITRAIL.md).
COPY vendor ./vendor
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

COPY src ./src
# The real sources must look newer than the placeholders to cargo.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin auditrail \
 && mkdir -p /out/var/lib/auditrail \
 && strip --strip-debug -o /out/auditrail target/release/auditrail

FROM gcr.io/distroless/cc-debian13:nonroot
COPY --from=build /out/auditrail /usr/local/bin/auditrail
# The default checkpoint directory, writable by the user (Kubernetes mounts a volume here).
COPY --from=build --chown=65532:65532 /out/var/lib/auditrail /var/lib/auditrail
USER 65532:65532
# Prometheus metrics, /healthz and /readyz (metrics.listen).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/auditrail"]
CMD ["run", "--config", "/etc/auditrail/auditrail.yaml"]
