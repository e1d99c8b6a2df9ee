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
corral_pid=""
cleanup() {
	# On a failure mid-smoke-run: TERM first so corral stops its workers too.
	if [ -n "$corral_pid" ] && kill -TERM "$corral_pid" 2>/dev/null; then
		local until=$((SECONDS + 10))
		while kill -0 "$corral_pid" 2>/dev/null && [ "$SECONDS" -lt "$until" ]; do
			sleep 0.2
		done
		kill -KILL "$corral_pid" 2>/dev/null || true
	fi
	rm -rf "$out"
}
trap cleanup EXIT

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

# The image's config on loopback ports, with the bundled app where this
# build put it: corral must start it, answer the HEALTHCHECK command, serve,
# and stop cleanly on the STOPSIGNAL.
step "smoke run of the image's config"
http_port=$((40000 + RANDOM % 10000))
admin_port=$((50000 + RANDOM % 10000))
sed -e "s#0.0.0.0:8080#127.0.0.1:$http_port#" \
	-e "s#0.0.0.0:9180#127.0.0.1:$admin_port#" \
	-e "s#/usr/local/bin/hello#$out/hello#" \
	deploy/docker/config.hcl >"$out/config.hcl"
grep -q "127.0.0.1:$http_port" "$out/config.hcl" && grep -q "127.0.0.1:$admin_port" "$out/config.hcl" &&
	grep -q "$out/hello" "$out/config.hcl" ||
	fail "deploy/docker/config.hcl no longer has listen 0.0.0.0:8080, admin 0.0.0.0:9180 and /usr/local/bin/hello"

"$out/corral" run -config "$out/config.hcl" >"$out/corral.log" 2>&1 &
corral_pid=$!

# get PORT PATH prints the status code and body of a GET, with bash alone
# (CI images need not have curl).
get() {
	local reply
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
	reply="$(cat <&3)"
	exec 3<&-
	printf '%s\n' "$reply"
}

smoke_fail() {
	echo "--- corral log" >&2
	cat "$out/corral.log" >&2
	fail "$*"
}

deadline=$((SECONDS + 30))
until [ "$(get "$admin_port" /readyz 2>/dev/null | head -1 | cut -d' ' -f2)" = 200 ]; do
	kill -0 "$corral_pid" 2>/dev/null || smoke_fail "corral exited before it was ready"
	[ "$SECONDS" -lt "$deadline" ] || smoke_fail "/readyz not 200 within 30s"
	sleep 0.2
done
"$out/corral" health -admin "127.0.0.1:$admin_port" || smoke_fail "corral health failed on a ready instance"
reply="$(get "$http_port" /)" || smoke_fail "public port $http_port refused the connection"
case "$reply" in
"HTTP/1."?" 200"*"from hello-"*) echo "$reply" | tail -1 ;;
*) smoke_fail "public port answered: $reply" ;;
esac

kill -TERM "$corral_pid"
deadline=$((SECONDS + 30))
while kill -0 "$corral_pid" 2>/dev/null; do
	[ "$SECONDS" -lt "$deadline" ] || smoke_fail "corral still running 30s after SIGTERM"
	sleep 0.2
done
rc=0
wait "$corral_pid" || rc=$?
corral_pid=""
[ "$rc" -eq 0 ] || smoke_fail "corral exited $rc after SIGTERM, want 0"
if command -v pgrep >/dev/null 2>&1 && pgrep -f -- "$out/hello" >/dev/null; then
	smoke_fail "hello workers outlived corral: $(pgrep -f -- "$out/hello" | tr '\n' ' ')"
fi

echo "build-image-steps: ok"
