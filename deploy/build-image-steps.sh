#!/usr/bin/env bash
# Runs the build steps of the repository's Dockerfile without a Docker
# engine, for CI machines that have none: builds the same static binaries
# with the same flags, checks they are static (the image is distroless: no
# libc), and runs the built corral against the image's config.
#
#   VERSION=1.2.3 bash deploy/build-image-steps.sh
#
# Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION="${VERSION:-dev}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

fail() {
	echo "build-image-steps: $*" >&2
	exit 1
}

step() {
	echo "--- $*"
}

step "go mod download"
go mod download

step "build corral $VERSION"
# The same command as the Dockerfile and .ci/run (deploy/deploy_test.go keeps
# them equal).
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$out/corral" ./cmd/corral

step "build hello"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/hello" ./examples/hello

for bin in corral hello; do
	step "check $bin is static"
	go version -m "$out/$bin" | grep -Eq '^[[:space:]]*build[[:space:]]+CGO_ENABLED=0$' ||
		fail "$bin was not built with CGO_ENABLED=0"
	if command -v ldd >/dev/null 2>&1; then
		# ldd exits non-zero on a static binary, so read its words, not its status.
		ldd_out="$(ldd "$out/$bin" 2>&1 || true)"
		case "$ldd_out" in
		*"not a dynamic executable"* | *"statically linked"*) ;;
		*) fail "$bin is dynamically linked: $ldd_out" ;;
		esac
	fi
done

step "corral version"
version_out="$("$out/corral" version)" || fail "corral version failed"
echo "$version_out"
case "$version_out" in
*"$VERSION"*) ;;
*) fail "corral version does not report $VERSION (is -X main.version wired?)" ;;
esac

for config in deploy/docker/config.hcl examples/node/config.hcl examples/python/config.hcl; do
	step "corral validate -config $config"
	"$out/corral" validate -config "$config" || fail "$config is not valid"
done

echo "build-image-steps: ok"
