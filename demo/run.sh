#!/usr/bin/env bash
# The whole msync cycle on a built-in default: three local folders stand in
# for three cloud accounts. install, start, copy files in through the mount,
# status, stop; then show the files sitting in the "clouds", spread across
# them, and restore them into a fresh install with import.
#
# Usage: demo/run.sh [msync binary]   (make demo builds and runs it)
set -euo pipefail

msync=${1:-target/release/msync}
msync=$(realpath "$msync")
demo=${MSYNC_DEMO_DIR:-/tmp/msync-demo}
conf=$demo/rclone.conf

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
    for pair in "install:mnt" "install2:mnt2"; do
        inst=$demo/${pair%%:*} mnt=$demo/${pair##*:}
        "$msync" stop "$inst" "$mnt" --now >/dev/null 2>&1 || true
        mountpoint -q "$mnt" 2>/dev/null && umount -l "$mnt" || true
    done
}
trap cleanup EXIT

# Idle: every branch idle, nothing queued, nothing in flight (the JSON is
# pretty-printed, one field a line; an empty in_flight prints as []).
wait_until_idle() {
    local inst=$1
    for _ in $(seq 1 600); do
        local status
        # Exit 6 (a branch retrying) is a state to wait out, not a failure.
        status=$("$msync" status "$inst" --json) || true
        if ! grep -Eq '"state": "(syncing|retrying|error)"|"queued": [1-9]|"in_flight": \[$' <<<"$status"; then
            return 0
        fi
        sleep 0.5
    done
    echo "the service did not settle" >&2
    return 1
}

say "a fresh demo directory: $demo"
cleanup
rm -rf "$demo"
mkdir -p "$demo"/clouds/{cloud1,cloud2,cloud3} "$demo/data/photos/2026" "$demo/data/docs"
cat >"$conf" <<CONF
[cloud1]
type = alias
remote = $demo/clouds/cloud1

[cloud2]
type = alias
remote = $demo/clouds/cloud2

[cloud3]
type = alias
remote = $demo/clouds/cloud3
CONF
for i in $(seq 1 40); do head -c $((i * 1024)) /dev/urandom >"$demo/data/photos/2026/img_$i.jpg"; done
for i in $(seq 1 10); do echo "document $i" >"$demo/data/docs/note $i.txt"; done
head -c $((64 * 1024 * 1024)) /dev/urandom >"$demo/data/video.mkv"

say "msync check"
"$msync" --config "$conf" check

say "msync install: one branch per remote"
"$msync" --config "$conf" install "$demo/install"

say "msync import: the clouds are empty, nothing to restore"
"$msync" import "$demo/install"

say "msync start: mount the pool"
"$msync" start "$demo/install" "$demo/mnt"
df -h "$demo/mnt" | tail -1

say "copy files in through the mount"
cp -r "$demo/data/." "$demo/mnt/"
sleep 1
"$msync" status "$demo/install"

say "wait until every change is in the clouds"
wait_until_idle "$demo/install"
"$msync" status "$demo/install"

say "msync stop"
"$msync" stop "$demo/install" "$demo/mnt"

say "the files sit in the clouds, spread across them"
for cloud in cloud1 cloud2 cloud3; do
    printf '%s: %s files, %s\n' "$cloud" \
        "$(rclone --config "$conf" lsf -R --files-only --exclude '/.msync/**' "$cloud:msync" | wc -l)" \
        "$(rclone --config "$conf" size --exclude '/.msync/**' "$cloud:msync" | sed -n 's/^Total size: //p')"
done

say "import into a fresh install restores every byte"
"$msync" --config "$conf" install "$demo/install2"
"$msync" import "$demo/install2"
"$msync" start "$demo/install2" "$demo/mnt2"
# .msync-branch: each branch's marker, which msync put there (see README).
diff -r --exclude=.msync-branch "$demo/data" "$demo/mnt2"
echo "identical: $(find "$demo/data" -type f | wc -l) files"
"$msync" stop "$demo/install2" "$demo/mnt2"

say "demo complete"
