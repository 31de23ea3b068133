# sitio as a FROM scratch image: one static binary, no shell, no libc, non-root.
#
# No base image can be pulled here (and none is needed), so the static binary is
# built first, outside the image, by scripts/build-image.sh:
#
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --target x86_64-unknown-linux-gnu
#   cp target/x86_64-unknown-linux-gnu/release/sitio dist/sitio
#
# The same folder works for OpenShift's binary build
# (oc start-build sitio --from-dir=. --follow), see deploy/openshift/.
FROM scratch
COPY dist/sitio /sitio
# Numeric user: a scratch image has no /etc/passwd. 65532 is the usual "nonroot".
USER 65532:65532
# Traffic, admin (/live, /ready, /metrics, /stats, /tap, dashboard).
EXPOSE 8080 9901
ENV PORT=8080 TARGET_PORT=8087 SITIO_ADMIN_PORT=9901
ENTRYPOINT ["/sitio"]
