# syntax=docker/dockerfile:1
#
# Sentinel's container image: the sentinel and beacon binaries, static
# (CGO_ENABLED=0), on distroless, running as a non-root user.
#
#   docker build -t sentinel:$(cat VERSION) \
#     --build-arg VERSION=$(cat VERSION) \
#     --build-arg REVISION=$(git rev-parse --short HEAD) \
#     --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) .
#
#   docker run -p 9464:9464 \
#     -v $PWD/sentinel.yml:/etc/sentinel/sentinel.yml:ro \
#     -v sentinel-data:/data sentinel:$(cat VERSION)
#
# No configuration is baked in: the example configuration's keys are
# published demo values, and an image that starts with them would run a kill
# switch anyone can use. Mount your own at /etc/sentinel/sentinel.yml (or
# pass --config.file); its *_file secrets are read from wherever you mount
# them. deploy/kubernetes/ shows the Kubernetes way.
#
# No HEALTHCHECK: distroless has no shell, curl or wget to run one, and
# sentinel has no self-probe subcommand. Orchestrators probe over HTTP:
# GET /-/healthy (liveness) and GET /-/ready (readiness, 503 while starting
# or shutting down); see the probes in deploy/kubernetes/sentinel.yaml.
#
# Stop with SIGTERM (docker stop) and allow it more than
# --web.shutdown-timeout (15s) plus the final snapshot, e.g.
# `docker stop -t 60`: the hot state of every agent is written at shutdown.

ARG GO_VERSION=1.26

# Cross-compiles on the build machine's platform for the target platform
# (docker buildx build --platform linux/amd64,linux/arm64).
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .

# The version stamp of `make build` (see LDFLAGS in the Makefile): the same
# variables of github.com/prometheus/common/version, shown by --version and
# exported as sentinel_build_info. VERSION defaults to the VERSION file;
# REVISION and BRANCH cannot be computed here (.git is not in the context).
ARG VERSION=""
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILD_USER=docker
ARG TARGETOS
ARG TARGETARCH
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    set -eu; \
    VPKG=github.com/prometheus/common/version; \
    GOOS="${TARGETOS:-linux}" GOARCH="${TARGETARCH:-$(go env GOARCH)}" \
    go build -trimpath -ldflags "\
        -X $VPKG.Version=${VERSION:-$(cat VERSION)} \
        -X $VPKG.Revision=$REVISION \
        -X $VPKG.Branch=$BRANCH \
        -X $VPKG.BuildUser=$BUILD_USER \
        -X $VPKG.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)" \
      -o /out/ ./cmd/...; \
    test -x /out/sentinel; test -x /out/beacon; \
    mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=""
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sentinel" \
      org.opencontainers.image.description="A Prometheus-native dead man's switch for fleets of AI agents" \
      org.opencontainers.image.source="https://github.com/agentsentinel/sentinel" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY --from=build /out/sentinel /out/beacon /bin/
# --storage.path: the kill-switch journal, the agent snapshot and the token
# key. Owned by the non-root user so that a fresh named volume, which Docker
# initialises from the image, is writable. Keep it on a volume: losing it
# loses every revocation.
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME /data

# distroless' "nonroot", numerically: Kubernetes' runAsNonRoot can only
# verify a numeric user.
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/bin/sentinel"]
CMD ["--config.file=/etc/sentinel/sentinel.yml", "--storage.path=/data"]
