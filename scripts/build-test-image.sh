#!/usr/bin/env bash
# Builds the local test image `csagent-test/code-server:latest` (no registry needed):
# the fake code-server from tests/fake-code-server, busybox for a shell, curl for
# the health check, laid out like the real image (user coder 1000:1000, listens on
# 8080, entrypoint /usr/bin/entrypoint.sh --bind-addr 0.0.0.0:8080 .).
# Skips the import when an image built from the same inputs already exists.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${TEST_IMAGE:-csagent-test/code-server:latest}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

command -v busybox >/dev/null || { echo "build-test-image: busybox missing (apt-get install busybox-static)" >&2; exit 1; }
command -v curl >/dev/null || { echo "build-test-image: curl missing (apt-get install curl)" >&2; exit 1; }

cargo build -q --release -p fake-code-server
bin="$TARGET_DIR/release/fake-code-server"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,usr/bin,etc,tmp,home/coder/workspace,home/coder/.local/share/code-server,lib,lib64,usr/lib,etc/ssl/certs,proc,sys,dev,run}
chmod 1777 "$root/tmp"
install -m 0755 "$bin" "$root/usr/bin/fake-code-server"
install -m 0755 "$(command -v busybox)" "$root/bin/busybox"
for applet in sh cat echo env ls sleep id; do ln -sf busybox "$root/bin/$applet"; done
install -m 0755 "$(command -v curl)" "$root/usr/bin/curl"

# Shared libraries of the dynamic binaries, at the same paths as on the host.
for b in "$bin" "$(command -v curl)"; do
  ldd "$b" | awk '/=> \//{print $3} /^[ \t]*\/.*ld-linux/{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
# The rest of glibc's core a Debian-based image has (libm, libgcc_s): with a disk quota,
# csagent's own binary runs in the container as `container-init`.
for name in libm.so.6 libgcc_s.so.1; do
  lib=$(ldconfig -p | awk -v n="$name" '$1 == n && /x86-64|AArch64/ {print $NF; exit}')
  [ -n "$lib" ] || { echo "build-test-image: $name not found (ldconfig -p)" >&2; exit 1; }
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true

cat > "$root/usr/bin/entrypoint.sh" <<'EOS'
#!/bin/sh
# Same shape as the real image's entrypoint: pass everything to the server.
exec /usr/bin/fake-code-server "$@"
EOS
chmod 0755 "$root/usr/bin/entrypoint.sh"
printf 'root:x:0:0:root:/root:/bin/sh\ncoder:x:1000:1000:coder:/home/coder:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\ncoder:x:1000:\n' > "$root/etc/group"
chown -R 1000:1000 "$root/home/coder"

# Content hash of the root filesystem decides whether a rebuild is needed.
hash=$(cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
existing=$(docker image inspect -f '{{ index .Config.Labels "csagent.test-image-hash" }}' "$IMAGE" 2>/dev/null || true)
if [ "$existing" = "$hash" ]; then
  echo "build-test-image: $IMAGE is up to date ($hash)"
  exit 0
fi

tar -C "$root" --numeric-owner -cf - . | docker import \
  --change 'ENTRYPOINT ["/usr/bin/entrypoint.sh", "--bind-addr", "0.0.0.0:8080", "."]' \
  --change 'USER 1000' \
  --change 'WORKDIR /home/coder' \
  --change 'ENV HOME=/home/coder PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'EXPOSE 8080' \
  --change "LABEL csagent.test-image-hash=$hash" \
  - "$IMAGE" >/dev/null
echo "build-test-image: built $IMAGE ($hash)"
