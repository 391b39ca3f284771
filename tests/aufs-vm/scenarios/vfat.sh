# A cloud on a real case-insensitive filesystem: cloud1 is a folder on vfat
# (a loop device), declared case-insensitive in its rclone remote, as a
# OneDrive or Dropbox remote reports itself. Names of the pool that differ
# only in case must never both go there: vfat would keep one file, with
# the second's bytes.
source "$MSYNC_REPO/tests/aufs-vm/lib.sh"

rm -rf "$work"
mkdir -p "$work/vfat" "$work/clouds/cloud2"
truncate -s 64M "$work/vfat.img"
mkfs.vfat -n CLOUD1 "$work/vfat.img" >/dev/null
mount -o loop,utf8 "$work/vfat.img" "$work/vfat"
mkdir -p "$work/vfat/cloud1"
cat >"$conf" <<CONF
[cloud1]
type = alias
remote = :local,case_insensitive=true:$work/vfat/cloud1

[cloud2]
type = alias
remote = $work/clouds/cloud2
CONF
clouds=(cloud1 cloud2)
msync --config "$conf" install "$install" >/dev/null
msync import "$install" >/dev/null
msync start "$install" "$mnt" --union aufs --debounce 200ms

one=$(branch cloud1)
echo "first" >"$one/Photo.jpg"
mkdir -p "$one/Docs"
echo "a" >"$one/Docs/a.txt"
settle
echo "second" >"$one/photo.jpg"
mkdir -p "$one/docs"
echo "b" >"$one/docs/b.txt"
settle
assert_in_sync

[ "$(cat "$work/vfat/cloud1/msync/Photo.jpg")" = first ] || fail "vfat's Photo.jpg lost its bytes"
[ "$(rclone cat cloud2:msync/photo.jpg)" = second ] || fail "photo.jpg is not on cloud2"
[ "$(rclone cat cloud2:msync/docs/b.txt)" = b ] || fail "docs/b.txt is not on cloud2"
[ "$(cat "$work/vfat/cloud1/msync/Docs/a.txt")" = a ] || fail "Docs/a.txt lost its bytes on vfat"
[ -e "$work/vfat/cloud1/msync/Docs/b.txt" ] && fail "docs/b.txt went into vfat's Docs"
# Through the mount, both names, each with its own bytes.
[ "$(cat "$mnt/Photo.jpg")" = first ] && [ "$(cat "$mnt/photo.jpg")" = second ] ||
	fail "the mount does not show both names with their own bytes"
msync stop "$install" "$mnt"
umount "$work/vfat"
echo "aufs vfat scenario: ok"
