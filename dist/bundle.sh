#!/bin/sh
# dist/bundle.sh BIN_DIR OUT_DIR: the release bundle, OUT_DIR/msync-<version>-<arch>.tar.gz,
# from BIN_DIR's msync and librclone.so (make dist passes target/release).
# Unpacked anywhere, ./msync finds librclone.so beside it; the man pages,
# completions and systemd unit come along, with a short README.
set -eu

bin=$(cd "$1" && pwd)
out=$2
here=$(cd "$(dirname "$0")" && pwd)
for file in "$bin/msync" "$bin/librclone.so"; do
	if [ ! -f "$file" ]; then
		echo "bundle.sh: $file missing: build first (make release)" >&2
		exit 1
	fi
done
version=$("$bin/msync" --version | awk '{print $2}')
arch=$(uname -m)
name=msync-$version-$arch
mkdir -p "$out"
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
root=$staging/$name
mkdir -p "$root/man" "$root/completions"
cp "$bin/msync" "$bin/librclone.so" "$root/"
strip --strip-unneeded "$root/msync" 2>/dev/null || true
cp "$here/msync.service" "$root/"
"$bin/msync" manual "$root/man"
"$bin/msync" completions bash >"$root/completions/msync.bash"
"$bin/msync" completions zsh >"$root/completions/_msync"
"$bin/msync" completions fish >"$root/completions/msync.fish"
cat >"$root/README" <<README
msync $version for $arch: many cloud storage accounts used as one store.

  ./msync check                 what this machine has and lacks (run as root)
  ./msync --help                every command; man ./man/msync.1 for the manual

msync loads librclone.so from beside itself. To install system-wide:
  install -d /usr/local/lib/msync && cp msync librclone.so /usr/local/lib/msync/
  ln -sf /usr/local/lib/msync/msync /usr/local/bin/msync
  cp man/*.1 /usr/local/share/man/man1/
  cp completions/msync.bash /usr/share/bash-completion/completions/msync
  cp msync.service /etc/systemd/system/   (then edit its paths)
It needs mergerfs and FUSE, or a kernel with aufs; \`msync check\` says which.
README
tar -C "$staging" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
