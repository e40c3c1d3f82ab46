# Switchyard: one static binary (skills and migrations embedded) on a
# distroless, non-root base. Every subcommand runs from this image:
#   docker run --rm switchyard:dev orchestrator -h
# docker-compose.yml runs the whole system from it.

# The Go version of go.mod (cmd/switchyard's deploy test checks they match).
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/switchyard ./cmd/switchyard
# The orchestrator's outbox directory, owned by the non-root user, so that a
# volume mounted there starts out writable by it (distroless has no shell to
# create it in the final stage).
RUN mkdir -p /out/var/lib/switchyard/outbox

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/switchyard /switchyard
COPY --from=build --chown=65532:65532 /out/var/lib/switchyard /var/lib/switchyard
USER nonroot:nonroot
# orchestrator, accountpool, activity, simulator, metrics
EXPOSE 50051 50052 50053 50080 9464
ENTRYPOINT ["/switchyard"]
