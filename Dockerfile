# syntax=docker/dockerfile:1
# One image with every service binary: jumpstarter-controller, jumpstarter-router and
# jumpstarter (standalone service and admin CLI). The Helm chart in helm/ runs it.
#
#   docker build -t jumpstarter-service:0.1.0 .
#
# Without a registry (tools/build-image.sh does this with buildah): binaries built on the host
# and staged in target/image-bin/, and a runtime base made locally:
#
#   docker build --build-arg BINARIES=host-binaries \
#     --build-arg BASE_IMAGE=localhost/jumpstarter-base:debian12 -t jumpstarter-service:dev .

# The toolchain pinned in rust-toolchain.toml.
ARG RUST_VERSION=1.95.0
# Runtime base: glibc + libgcc, no shell, user 65532 (nonroot), which is what the chart's
# security context expects.
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Where the binaries come from: `build` compiles them in the Rust stage below;
# `host-binaries` takes them, already built, from target/image-bin/ in the build context.
ARG BINARIES=build

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

# Binaries built outside the image (linked against a glibc no newer than BASE_IMAGE's).
FROM scratch AS host-binaries
COPY target/image-bin/ /out/

# The stage BINARIES names; only that one is built.
FROM ${BINARIES} AS binaries

FROM ${BASE_IMAGE}
COPY --from=binaries /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080 8081 8082 8083 8083/udp 9090
ENTRYPOINT ["/usr/local/bin/jumpstarter-controller"]
CMD ["--help"]
