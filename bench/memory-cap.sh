#!/usr/bin/env bash
# bench/memory-cap.sh [FILES]: the service's memory with a branch of FILES
# small files (default 100000), without and with `start --go-memory-limit`,
# side by side on the same data. Reports, never asserts: writes
# bench/results/memory-cap.md. Needs `make release` (msync with
# librclone.so beside it) and mergerfs; run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-100000}
msync=$PWD/target/release/msync
[ -x "$msync" ] && [ -f target/release/librclone.so ] || {
	echo "build first: make release" >&2
	exit 1
}
work=$(mktemp -d /tmp/msync-memcap.XXXXXX)
conf=$work/rclone.conf
trap 'for m in "$work"/mnt*; do "$msync" stop "$work/install" "$m" --now >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT
mkdir -p "$work/cloud/msync"
printf '[cloud]\ntype = alias\nremote = %s\n' "$work/cloud" >"$conf"
echo "making $files files on the cloud..."
for d in $(seq 0 $(((files - 1) / 1000))); do
	mkdir -p "$work/cloud/msync/d$d"
	for f in $(seq 0 999); do
		n=$((d * 1000 + f))
		[ "$n" -lt "$files" ] || break
		printf 'file %s\n' "$n" >"$work/cloud/msync/d$d/f$f"
	done
done
"$msync" --config "$conf" install "$work/install" >/dev/null
"$msync" import "$work/install" >/dev/null

settle() {
	for _ in $(seq 1 3600); do
		status=$("$msync" status "$work/install" --json) || true
		if ! grep -Eq '"state": "(syncing|retrying|error)"|"queued": [1-9]' <<<"$status"; then
			return 0
		fi
		sleep 1
	done
	return 1
}

measure() {
	local label=$1
	shift
	local mnt=$work/mnt-$label
	"$msync" start "$work/install" "$mnt" --debounce 200ms "$@" >/dev/null
	settle
	local pid
	pid=$("$msync" status "$work/install" --json | grep -o '"pid": [0-9]*' | grep -o '[0-9]*')
	# A change after settling, so the steady state includes work.
	for i in $(seq 1 200); do echo "$i" >"$mnt/d0/new$i"; done
	settle
	sleep 5
	local rss hwm
	rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
	hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
	"$msync" stop "$work/install" "$mnt" >/dev/null
	echo "| $label | $((rss / 1024)) MiB | $((hwm / 1024)) MiB |"
}

rows=$(
	measure "no cap"
	measure "--go-memory-limit 64M" --go-memory-limit 64M
	measure "--go-memory-limit 32M" --go-memory-limit 32M
)
{
	echo "# The service's memory at $files files, with and without a Go heap cap"
	echo
	echo "\`bench/memory-cap.sh $files\` on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%F):"
	echo "one local cloud, the branch imported, the service started and settled,"
	echo "200 new files sent, then its resident memory (VmRSS) and peak (VmHWM)."
	echo
	echo "| start option | resident | peak |"
	echo "|---|---|---|"
	echo "$rows"
} | tee bench/results/memory-cap.md
