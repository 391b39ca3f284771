#!/bin/sh
# make test-aufs: every scenario of tests/aufs-vm/scenarios/ in a VM of its
# own (run.sh), one after the other; fails if any fails, and never skips:
# a VM that cannot run is a failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
failed=
count=0
for scenario in "$here"/scenarios/*.sh; do
	name=$(basename "$scenario" .sh)
	count=$((count + 1))
	echo "== aufs VM: $name"
	if "$here/run.sh" "$scenario"; then
		echo "== aufs VM: $name: ok"
	else
		echo "== aufs VM: $name: FAILED"
		failed="$failed $name"
	fi
done
if [ -n "$failed" ]; then
	echo "aufs VM: failed:$failed (of $count)"
	exit 1
fi
echo "aufs VM: all $count scenario(s) passed"
