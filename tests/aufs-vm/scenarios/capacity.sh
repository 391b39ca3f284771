# Capacity on aufs: aufs picks branches round robin (create=rr), so a file
# lands on a cloud with no room for it; the service moves it to a branch
# whose cloud has room, with one rename, and it is seen at the same path
# through the mount all along.
source "$MSYNC_REPO/tests/aufs-vm/lib.sh"

rm -rf "$work"
mkdir -p "$work"
clouds=(cloud1 cloud2 cloud3)
: >"$conf"
for name in "${clouds[@]}"; do
	mkdir -p "$work/clouds/$name"
	printf '[%s]\ntype = alias\nremote = %s\n\n' "$name" "$work/clouds/$name" >>"$conf"
done
# cloud1 takes 100 KiB at most: none of the files below fits there.
msync --config "$conf" install "$install" --quota cloud1=100K >/dev/null
msync import "$install" >/dev/null
msync start "$install" "$mnt" --union aufs --debounce 200ms --min-free 0

mkdir -p "$mnt/big"
for i in $(seq 1 6); do
	head -c 300000 /dev/urandom >"$work/f$i"
	cp "$work/f$i" "$mnt/big/f$i.bin"
done
settle
assert_in_sync
on_first=$(cloud_files cloud1 | grep -c '^big/' || true)
[ "$on_first" -eq 0 ] || fail "cloud1 (100 KiB) holds $on_first of the 300 KB files"
[ "$(pool_files | grep -c '^big/')" -eq 6 ] || fail "not every file is on a cloud: $(pool_files)"
grep -q "no room for big/" "$install/msync.log" || fail "no file was moved: aufs never put one on cloud1?"
for i in $(seq 1 6); do
	cmp "$work/f$i" "$mnt/big/f$i.bin" || fail "big/f$i.bin differs through the mount"
done
msync stop "$install" "$mnt"
echo "aufs capacity scenario: ok"
