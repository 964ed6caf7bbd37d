# syntax=docker/dockerfile:1.7
#
# The ccplant operator image: a release build on the official Rust image, copied into a
# distroless base that has glibc, libgcc and CA certificates and nothing else (no shell, no
# package manager). Runs as the distroless "nonroot" user 65532, matching the Helm chart.
#
#   docker build -t ghcr.io/ccplant/ccplant-operator:0.1.0 .
#
# Keep the Rust version >= the workspace's rust-version (Cargo.toml).
ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Only the files cargo needs (.dockerignore keeps target/, .git/ and the chart out of the context).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# Cache mounts keep the registry and the target directory between builds; the binary is copied
# out of the cache because cache mounts do not end up in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p ccplant-operator \
 && install -D -m 0755 target/release/ccplant-operator /out/ccplant-operator

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ccplant-operator" \
      org.opencontainers.image.description="The ccplant Kubernetes operator: AI coding-agent sessions and exactly-once GitHub tasks" \
      org.opencontainers.image.source="https://github.com/ccplant/ccplant" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ccplant-operator /usr/local/bin/ccplant-operator
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ccplant-operator"]
CMD ["run"]
