# syntax=docker/dockerfile:1
# One image with every service binary: jumpstarter-controller, jumpstarter-router and
# jumpstarter (standalone service and admin CLI). The Helm chart in helm/ runs it.
#
#   docker build -t jumpstarter-service:0.1.0 .
#
# Without a registry (tools/build-image.sh does this with buildah): the `host-binaries`
# target takes binaries built on the host and staged in target/image-bin/, on a runtime base
# made locally:
#
#   docker build --target host-binaries \
#     --build-arg BASE_IMAGE=localhost/jumpstarter-base:debian12 -t jumpstarter-service:dev .
#
# (A target rather than a build argument naming the binaries' stage: buildah 1.28 does not
# build a stage that a FROM names through an argument's default value.)

# The toolchain pinned in rust-toolchain.toml.
ARG RUST_VERSION=1.95.0
# Runtime base: glibc + libgcc, no shell, user 65532 (nonroot), which is what the chart's
# security context expects.
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG RUST_VERSION
# Use the image's toolchain as is: rust-toolchain.toml would also ask rustup for rustfmt
# and clippy, which a release build does not need.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p jumpstarter-controller -p jumpstarter-router -p jumpstarter-standalone --bins \
 && mkdir -p /out \
 && cp target/release/jumpstarter-controller target/release/jumpstarter-router \
       target/release/jumpstarter /out/

# What both targets share: the base, the user and the ports (COPY ignores USER: the binaries
# are root's, read-only to the service).
FROM ${BASE_IMAGE} AS runtime
USER 65532:65532
EXPOSE 8080 8081 8082 8083 8083/udp 9090
ENTRYPOINT ["/usr/local/bin/jumpstarter-controller"]
CMD ["--help"]

# Binaries built outside the image (linked against a glibc no newer than BASE_IMAGE's).
FROM runtime AS host-binaries
COPY target/image-bin/ /usr/local/bin/

# The default target: binaries from the Rust stage above.
FROM runtime
COPY --from=build /out/ /usr/local/bin/
