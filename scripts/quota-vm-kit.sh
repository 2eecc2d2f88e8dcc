#!/bin/bash
# Builds the small VM that tests/quota.rs boots to test project quotas with a kernel
# that has them (CONFIG_QFMT_V2, CONFIG_XFS_QUOTA): the build machines' own kernel may
# not (see docs/operations.md, "Disk quotas"). The kit is Debian's stock kernel and an
# initramfs whose /init (busybox) loads the modules the test needs, mounts the host's
# root read-only over 9p and runs the command given on the kernel command line there.
#
# Usage: scripts/quota-vm-kit.sh DIR   (idempotent; leaves DIR/vmlinuz, DIR/initrd.gz)
# Needs: apt-get (a Debian/Ubuntu package source), qemu-system-x86, busybox-static, kmod, cpio.
set -euo pipefail
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ -s "$dir/vmlinuz" ] && [ -s "$dir/initrd.gz" ] && exit 0

work=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
# The newest generic amd64 kernel image the package source has (not -cloud: it lacks 9p).
newest_kernel() {
  apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1
}
pkg=$(newest_kernel)
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(newest_kernel)
fi
[ -n "$pkg" ] || { echo "no linux-image-*-amd64 package in the package lists" >&2; exit 1; }
apt-get download -q "$pkg" >/dev/null 2>&1 || apt-get download "$pkg"
dpkg-deb -x "$pkg"_*.deb k
release=$(ls k/lib/modules)
depmod -b k "$release"

mkdir -p root/bin root/modules root/dev root/proc root/sys root/host
cp "$(command -v busybox)" root/bin/busybox
for m in virtio_pci virtio_blk 9pnet_virtio 9p ext4 xfs quota_v2; do
  modprobe -d k -S "$release" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' > order
while read -r ko; do
  name=$(basename "$ko")
  case "$name" in
    *.ko.xz) xz -dc "$ko" > "root/modules/${name%.xz}"; name=${name%.xz} ;;
    *.ko.zst) zstd -qdc "$ko" > "root/modules/${name%.zst}"; name=${name%.zst} ;;
    *) cp "$ko" "root/modules/$name" ;;
  esac
  echo "$name" >> root/modules/order
done < order

cat > root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/modules/$m" || echo "insmod $m failed"; done < /modules/order
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host || { echo "QUOTA-VM: cannot mount the host"; poweroff -f; }
for d in proc sys dev; do mount --bind /$d /host/$d; done
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
# The command comes from the kernel command line after "--" (our arguments).
cd /
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
echo "QUOTA-VM-EXIT: $?"
sync
poweroff -f
INIT
chmod +x root/init
(cd root && find . | cpio -o -H newc --quiet | gzip -1) > initrd.gz
cp k/boot/vmlinuz-* "$dir/vmlinuz.new" && mv "$dir/vmlinuz.new" "$dir/vmlinuz"
mv initrd.gz "$dir/initrd.gz"
echo "$pkg" > "$dir/kernel-package"
