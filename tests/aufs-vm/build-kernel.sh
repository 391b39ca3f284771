#!/bin/sh
# Builds a small Linux 6.1 kernel with aufs built in, for the aufs VM:
# Debian's linux-source-6.1, aufs-standalone's patches and sources, then
# tinyconfig plus kernel.config. Writes OUT/bzImage (default
# target/aufs-vm); `make test-aufs` runs it only when an input changed.
#
# aufs-standalone for 6.1 is not in Debian: it is looked for in $AUFS_SRC,
# else beside this checkout in ../shared/aufs/aufs6.1.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/target/aufs-vm}
source_tar=/usr/src/linux-source-6.1.tar.xz

aufs=${AUFS_SRC:-}
if [ -z "$aufs" ]; then
	for candidate in "$repo/../shared/aufs/aufs6.1" /work/shared/aufs/aufs6.1; do
		if [ -f "$candidate/aufs6-base.patch" ]; then
			aufs=$candidate
			break
		fi
	done
fi
if [ -z "$aufs" ] || [ ! -f "$aufs/aufs6-base.patch" ]; then
	echo "build-kernel.sh: aufs-standalone for 6.1 not found: set AUFS_SRC to its directory (the one holding aufs6-base.patch)" >&2
	exit 1
fi
if [ ! -f "$source_tar" ]; then
	echo "build-kernel.sh: $source_tar missing: apt-get install linux-source-6.1 (make test-aufs installs it)" >&2
	exit 1
fi

mkdir -p "$out"
tree=$out/linux
rm -rf "$tree"
mkdir -p "$tree"
echo "aufs VM: unpacking $source_tar"
tar -xf "$source_tar" -C "$tree" --strip-components=1
cd "$tree"

echo "aufs VM: applying aufs from $aufs"
apply() {
	patch -p1 --quiet --forward --no-backup-if-mismatch "$@"
}
apply <"$aufs/aufs6-kbuild.patch"
apply <"$aufs/aufs6-base.patch"
# Three hunks of the mmap patch do not apply to 6.1.y, whose mm/mmap.c was
# restructured after 6.1: they are left out here and mmap-6.1.y.patch does
# what they did (see its header).
apply --reject-file="$out/mmap-6.1.0.rej" <"$aufs/aufs6-mmap.patch" >/dev/null || true
rm -f "$out/mmap-6.1.0.rej"
apply <"$here/mmap-6.1.y.patch"
cp -R "$aufs/fs" "$aufs/Documentation" .
cp "$aufs/include/uapi/linux/aufs_type.h" include/uapi/linux/

echo "aufs VM: configuring"
make -s tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$here/kernel.config" >/dev/null
make -s olddefconfig >/dev/null
for option in CONFIG_AUFS_FS CONFIG_9P_FS CONFIG_INOTIFY_USER CONFIG_SERIAL_8250_CONSOLE CONFIG_VFAT_FS; do
	if ! grep -qx "$option=y" .config; then
		echo "build-kernel.sh: $option did not make it into the kernel's .config" >&2
		exit 1
	fi
done

echo "aufs VM: building the kernel ($(nproc) jobs)"
make -s -j"$(nproc)" bzImage
cp arch/x86/boot/bzImage "$out/bzImage"
echo "aufs VM: kernel ready: $out/bzImage"
