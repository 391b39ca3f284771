#!/bin/sh
# tests/aufs-vm/run.sh SCRIPT: runs SCRIPT as root inside a QEMU VM whose
# kernel has aufs (build-kernel.sh), prints what it prints, and exits with
# its status. Inside, the host's files are seen read-only at their own
# paths (msync and librclone.so from target/debug first on PATH, rclone,
# the usual tools), $MSYNC_REPO is this checkout, and /scratch, /tmp and
# /root are writable tmpfs.
#
#   AUFS_VM_KERNEL  the kernel (default target/aufs-vm/bzImage)
#   AUFS_VM_MEMORY  the guest's memory (default 2G)
#   AUFS_VM_TIMEOUT seconds before the VM is killed (default 900)
set -eu

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
	echo "usage: tests/aufs-vm/run.sh SCRIPT (a bash script to run inside the aufs VM)" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$repo/target/aufs-vm
kernel=${AUFS_VM_KERNEL:-$out/bzImage}
for tool in qemu-system-x86_64 cpio gzip; do
	if ! command -v "$tool" >/dev/null; then
		echo "run.sh: $tool not found: run \`make test-aufs\` once (it installs qemu-system-x86 and cpio)" >&2
		exit 1
	fi
done
if [ ! -f "$kernel" ]; then
	echo "run.sh: no kernel at $kernel: build it with \`make aufs-kernel\`" >&2
	exit 1
fi
if [ ! -x /bin/busybox ] || ! /bin/busybox --list | grep -qx reboot; then
	echo "run.sh: /bin/busybox missing: apt-get install busybox-static" >&2
	exit 1
fi

# The initramfs: busybox and the init script, nothing else.
initrd=$out/initramfs.gz
if [ ! -f "$initrd" ] || [ "$here/init" -nt "$initrd" ] || [ /bin/busybox -nt "$initrd" ]; then
	staging=$(mktemp -d)
	cp /bin/busybox "$staging/busybox"
	cp "$here/init" "$staging/init"
	(cd "$staging" && find . | cpio --quiet -o -H newc | gzip -1) >"$initrd.tmp"
	rm -rf "$staging"
	mv "$initrd.tmp" "$initrd"
fi

# The guest's /tmp is its own: the script goes where the guest sees it.
mkdir -p "$out/scripts"
script=$(mktemp "$out/scripts/XXXXXX.sh")
cp "$1" "$script"
log=$(mktemp)
trap 'rm -f "$log" "$script"' EXIT
status=0
timeout --foreground "${AUFS_VM_TIMEOUT:-900}" qemu-system-x86_64 \
	-accel tcg -smp 2 -m "${AUFS_VM_MEMORY:-2G}" \
	-nographic -no-reboot -nodefaults -serial stdio \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 msync.script=$script msync.path=$repo/target/debug msync.repo=$repo" \
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
	-virtfs "local,path=$repo,mount_tag=checkout,security_model=none,readonly=on,multidevs=remap" |
	tee "$log" || status=$?
exit_line=$(grep -a '^msync-vm: exit [0-9]*' "$log" | tail -n 1 | tr -d '\r')
if [ -z "$exit_line" ]; then
	echo "run.sh: the VM ended without reporting the script's status (qemu or timeout status $status)" >&2
	exit 1
fi
exit "${exit_line#msync-vm: exit }"
