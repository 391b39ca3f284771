# Helpers for the scenarios run inside the aufs VM (sourced, bash). Each
# scenario builds a pool of local folders standing in for clouds under
# /scratch, drives msync through an aufs mount, and checks the clouds with
# Debian's rclone CLI, never with msync's own view.
set -euo pipefail

work=/scratch/pool
conf=$work/rclone.conf
install=$work/install
mnt=$work/mnt
export RCLONE_CONFIG=$conf

fail() {
	echo "FAIL: $*" >&2
	if [ -f "$install/msync.log" ]; then
		echo "--- the end of msync.log" >&2
		tail -n 40 "$install/msync.log" >&2
	fi
	exit 1
}

# pool_with N: N clouds (cloud1..N, local folders), installed and started on
# aufs. Their names are in $clouds.
pool_with() {
	local count=$1
	rm -rf "$work"
	mkdir -p "$work"
	clouds=()
	: >"$conf"
	for i in $(seq 1 "$count"); do
		mkdir -p "$work/clouds/cloud$i"
		printf '[cloud%s]\ntype = alias\nremote = %s\n\n' "$i" "$work/clouds/cloud$i" >>"$conf"
		clouds+=("cloud$i")
	done
	msync --config "$conf" install "$install" >/dev/null
	msync import "$install" >/dev/null
	msync start "$install" "$mnt" --union aufs --debounce 200ms
	grep -q " $mnt aufs " /proc/mounts || fail "$mnt is not an aufs mount"
}

branch() { echo "$install/branches/$1"; }

# Waits until every branch is idle, nothing queued or in flight, twice.
settle() {
	local quiet=0 status
	for _ in $(seq 1 1200); do
		status=$(msync status "$install" --json) || true
		if grep -Eq '"state": "(syncing|retrying|error)"|"queued": [1-9]|"in_flight": \[$' <<<"$status"; then
			quiet=0
		else
			quiet=$((quiet + 1))
			[ "$quiet" -ge 2 ] && return 0
		fi
		sleep 0.5
	done
	echo "$status" >&2
	fail "the service did not settle"
}

# Every branch equals its cloud, by the rclone CLI; aufs's own metadata
# in the branches (.wh.*) is not data.
assert_in_sync() {
	local name
	for name in "${clouds[@]}"; do
		rclone check ":local,links:$(branch "$name")" "$name:msync" \
			--exclude '/.msync/**' --exclude /.msync-branch \
			--exclude '.wh.*' --exclude '.wh.*/**' -q ||
			fail "branch $name differs from $name:msync"
	done
}

# The files (not directories) of cloud NAME, one relative path a line.
cloud_files() {
	rclone lsf -R --files-only "$1:msync" --exclude '/.msync/**' --exclude /.msync-branch | sort
}

# What every cloud holds together, one path a line, sorted.
pool_files() {
	local name
	for name in "${clouds[@]}"; do cloud_files "$name"; done | sort
}
