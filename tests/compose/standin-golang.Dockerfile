# TEST FIXTURE, not a product image. It stands in for the official `golang:1.26-bookworm`, which no
# registry can give on the test machines (no container registry is reachable), so that the project's
# Dockerfiles build unchanged. Built by tests/compose/standins.sh, labelled org.app-pki.test-fixture=true.
#
# local/bookworm: a Debian bookworm minbase root file system from debootstrap.
# go/:      a copy of the host's Go tree (`go env GOROOT`).
# goproxy/: the cache/download folder of a GOMODCACHE holding exactly the modules the project's
#           Dockerfiles `go install` (pre-downloaded on the host, verified there against sum.golang.org).
#           Containers have no egress: Go reads its modules from this file proxy instead.
FROM local/bookworm
LABEL org.app-pki.test-fixture=true
COPY go /usr/local/go
COPY goproxy /goproxy
ENV GOPATH=/go \
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    GOTOOLCHAIN=local \
    GOPROXY=file:///goproxy \
    GOSUMDB=off \
    GOFLAGS=-mod=mod
RUN mkdir -p /go/bin /go/src && chmod -R 1777 /go
WORKDIR /go
