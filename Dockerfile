# sitio's image: a static binary in a FROM scratch image (no shell, no libc,
# non-root), built from source in the official Rust image.
#
#   docker build -t sitio:0.1.0 .
#
# arm64 as well: the builder compiles for the architecture it runs on, so
# `docker buildx build --platform linux/arm64 .` (or a build on an arm64 host)
# gives an arm64 image. Without a registry to pull the Rust image from, build
# the binary on the host and use Dockerfile.prebuilt (scripts/build-image.sh),
# or make a local stand-in with scripts/offline-rust-image.sh.
# The toolchain of rust-toolchain.toml (rustup in the image installs it if the
# tag's differs).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-static.sh /out/sitio

FROM scratch
# OCI labels; REVISION is the commit (docker build --build-arg REVISION=$(git rev-parse HEAD)).
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sitio" \
      org.opencontainers.image.description="A sidecar that decorates an HTTP service without touching its code" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/sitio /sitio
# Numeric user: a scratch image has no /etc/passwd. 65532 is the usual "nonroot".
USER 65532:65532
# Traffic, admin (/live, /ready, /metrics, /stats, /tap, dashboard).
EXPOSE 8080 9901
ENV PORT=8080 TARGET_PORT=8087 SITIO_ADMIN_PORT=9901
# For plain Docker (Kubernetes uses the manifests' probes): the binary itself
# asks the admin port, since the image has no shell or curl.
HEALTHCHECK --interval=10s --timeout=3s CMD ["/sitio", "health"]
ENTRYPOINT ["/sitio"]
