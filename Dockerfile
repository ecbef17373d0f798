# syntax=docker/dockerfile:1
#
# The tunnelplane image: one static binary on distroless, run as a non-root user. Build:
#
#   docker build -t tunnelplane/tunnelplane:dev --build-arg VERSION=$(git describe --always --dirty) .
#
# deploy/kubernetes's overlays run this image by that name (their images: entries; the test in
# deploy/kubernetes reads the name from the line above and the binary's path from ENTRYPOINT).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: a change of code alone reuses this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tunnelplane ./cmd/tunnelplane

# static: no libc, no shell, no package manager; CA certificates and /etc/passwd's nonroot user
# (65532) are there. The Kubernetes manifests run it with a read-only root filesystem; the data
# dir (TUNNELPLANE_DATA_DIR) is a volume.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tunnelplane /tunnelplane
USER 65532:65532
ENTRYPOINT ["/tunnelplane"]
