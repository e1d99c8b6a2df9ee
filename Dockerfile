# syntax=docker/dockerfile:1
#
# corral's container image: corral as PID 1 running four copies of the bundled
# example app (examples/hello). It is also the place other images take the
# corral binary from:
#
#   COPY --from=corral:latest /usr/local/bin/corral /usr/local/bin/corral
#
# Build:  docker build --build-arg VERSION=$(git describe --always) -t corral .
# Run:    docker run --rm -p 8080:8080 --stop-timeout 35 corral
#
# --stop-timeout 35 (compose: stop_grace_period) matters: Docker's default of
# 10s would SIGKILL corral in the middle of a graceful shutdown, which the
# container config bounds at shutdown.timeout = 25s (pre_stop_delay included).
#
# Base images: the build image is pinned to go.mod's exact Go release
# (deploy/deploy_test.go checks it). Neither is pinned by digest: no registry
# was reachable where this file was written to read one, and a digest that
# nobody checked is worse than a tag. distroless publishes no version tags,
# only a moving :nonroot; to pin a release build, resolve both with
# `docker buildx imagetools inspect IMAGE` and write IMAGE@sha256:... here.

FROM golang:1.26.8-bookworm AS build
ARG VERSION=dev
WORKDIR /src

# Dependencies first, in their own layer, so editing code does not refetch them.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=bind,source=go.mod,target=go.mod \
    --mount=type=bind,source=go.sum,target=go.sum \
    go mod download

COPY . .

# The same build command as .ci/run and deploy/build-image-steps.sh
# (deploy/deploy_test.go keeps them equal).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o /out/corral ./cmd/corral

# The example app must be static as well: the final image has no libc.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/hello ./examples/hello

# distroless/static rather than debian-slim or alpine: corral and hello are
# static binaries, so the image needs no libc, shell or package manager, which
# keeps it at a few MB with nothing to patch, and it ships a numeric non-root
# user, CA certificates and tzdata. The price is no shell: workers must be
# exec'd directly (no "sh -c", no "npm start"). Apps that need a runtime or a
# shell build FROM their own language image and copy corral in instead (see
# examples/node/Dockerfile); the health check needs no curl because
# "corral health" does it.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="corral" \
      org.opencontainers.image.description="runs N copies of a web app behind one port" \
      org.opencontainers.image.source="https://github.com/corral-dev/corral" \
      org.opencontainers.image.version="$VERSION"

COPY --from=build /out/corral /usr/local/bin/corral
COPY --from=build /out/hello /usr/local/bin/hello
COPY deploy/docker/config.hcl /etc/corral/config.hcl

# Numeric, so Kubernetes' runAsNonRoot can verify it (a user name cannot be
# checked without reading the image's /etc/passwd). 65532 is distroless' nonroot.
USER 65532:65532

# 8080: the public proxy. 9180: the admin API (/healthz, /readyz, /metrics).
EXPOSE 8080 9180

# corral is PID 1 on purpose: it forwards SIGTERM to every worker's process
# group and reaps orphans, so no tini or dumb-init is needed.
STOPSIGNAL SIGTERM

# `corral run` and `corral health` both read $CORRAL_CONFIG, so the health
# check dials whatever admin.listen the config sets (0.0.0.0 as loopback)
# instead of a hard-coded address. Run another config by changing this
# variable (docker run -e CORRAL_CONFIG=...), so the check follows it.
# /healthz is a heartbeat through corral's reload goroutine and every app's
# supervisor, not just a served request: a wedged corral turns unhealthy.
ENV CORRAL_CONFIG=/etc/corral/config.hcl
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["corral", "health"]

ENTRYPOINT ["corral"]
CMD ["run", "-config", "/etc/corral/config.hcl"]
