# On a real aufs mount: start mounts it through mount(2) with create=rr,
# writes through it spread over the branches and reach the clouds, aufs's
# own metadata never does, deletes and renames through aufs reach the
# clouds (those aufs makes with whiteouts too), stop unmounts, and import
# restores the pool.
source "$MSYNC_REPO/tests/aufs-vm/lib.sh"

pool_with 3
grep " $mnt aufs " /proc/mounts | grep -q "create=rr" || fail "aufs is not mounted with create=rr: $(grep " $mnt " /proc/mounts)"

echo "== writes through aufs"
mkdir -p "$mnt/docs/old" "$mnt/photos"
for i in $(seq 1 30); do
	head -c $((i * 100)) /dev/urandom >"$mnt/photos/p$i.jpg"
done
echo "a note" >"$mnt/docs/old/note.txt"
echo "to be deleted" >"$mnt/docs/gone.txt"
settle
assert_in_sync
used=0
for name in "${clouds[@]}"; do
	count=$(cloud_files "$name" | grep -c '^photos/' || true)
	echo "$name holds $count photos"
	[ "$count" -gt 0 ] && used=$((used + 1))
done
[ "$used" -eq 3 ] || fail "create=rr put the new files on $used of 3 branches"
# Only the start's reconcile ran: inotify on the branches saw the writes
# aufs made in them.
reconciles=$(grep -c ': reconciling ' "$install/msync.log" || true)
[ "$reconciles" -eq 3 ] || fail "$reconciles reconciles ran, not the 3 of the start: the writes were not seen by inotify"

echo "== deletes and renames through aufs"
rm "$mnt/docs/gone.txt"
mv "$mnt/photos/p1.jpg" "$mnt/photos/renamed.jpg"
mv "$mnt/docs/old" "$mnt/docs/new"
# A file of a lower branch changed through aufs: copied up, or written in
# place, either way the clouds must follow.
echo "changed" >>"$mnt/photos/p2.jpg"
settle
assert_in_sync
files=$(pool_files)
grep -qx 'photos/renamed.jpg' <<<"$files" || fail "the rename did not reach a cloud: $files"
grep -qx 'photos/p1.jpg' <<<"$files" && fail "the renamed file's old name is still on a cloud"
grep -qx 'docs/gone.txt' <<<"$files" && fail "the deleted file is still on a cloud"
grep -qx 'docs/new/note.txt' <<<"$files" || fail "the directory rename did not reach a cloud"
grep -q '\.wh\.' <<<"$(for n in "${clouds[@]}"; do rclone lsf -R "$n:msync"; done)" &&
	fail "aufs metadata (.wh.*) reached a cloud"
ls -a "$mnt/docs" | grep -q gone && fail "the deleted file is still seen through aufs"

echo "== deletes that aufs carries out with whiteouts"
# The same name in two branches (as an import or a copy-up can leave it):
# aufs deletes the first and hides the other behind a whiteout.
echo "upper" >"$(branch cloud2)/dup.txt"
echo "lower" >"$(branch cloud3)/dup.txt"
settle
[ "$(cat "$mnt/dup.txt")" = upper ] || fail "aufs does not show the first branch's dup.txt"
rm "$mnt/dup.txt"
# A directory spread over every branch, removed whole.
rm -r "$mnt/photos"
settle
assert_in_sync
[ -e "$mnt/dup.txt" ] && fail "dup.txt is still seen through aufs"
files=$(pool_files)
grep -q '^dup.txt$' <<<"$files" && fail "a cloud still holds dup.txt, deleted through aufs: $files"
grep -q '^photos/' <<<"$files" && fail "a cloud still holds photos/, deleted through aufs: $files"
for name in "${clouds[@]}"; do
	if rclone lsf "$name:msync" | grep -q '^photos/$'; then
		fail "$name still holds the directory photos/"
	fi
done

echo "== stop unmounts"
before=$(cd "$mnt" && find . -type f | sort)
msync stop "$install" "$mnt"
grep -q " $mnt " /proc/mounts && fail "$mnt is still mounted after stop"
[ -e "$mnt" ] && fail "$mnt still exists after stop"

echo "== import restores the pool"
second=$work/install2
msync --config "$conf" install "$second" >/dev/null
msync import "$second" >/dev/null
msync start "$second" "$work/mnt2" --union aufs --debounce 200ms
after=$(cd "$work/mnt2" && find . -type f | sort)
[ "$before" = "$after" ] || fail "the restored pool differs: $(diff <(echo "$before") <(echo "$after"))"
for f in docs/new/note.txt; do
	cmp "$work/mnt2/$f" "$(ls "$work"/install/branches/*/"$f" | head -n 1)" || fail "$f differs after import"
done
msync stop "$second" "$work/mnt2"
echo "aufs sync scenario: ok"
