// RC calls of msync's own, beyond upstream librclone's: what rclone's
// generic operations/* calls do with more requests than the work needs.
// msync asks for them by name and falls back to the generic calls when a
// library (an upstream build) lacks them.

package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/rclone/rclone/fs"
	"github.com/rclone/rclone/fs/operations"
	"github.com/rclone/rclone/fs/rc"
)

// addMsyncCalls registers msync's calls with rclone's RC registry.
func addMsyncCalls() {
	rc.Add(rc.Call{
		Path:         "msync/placefile",
		Fn:           placeFile,
		Title:        "Put a file whole into place, its old version kept",
		AuthRequired: true,
		Help: `Moves fs:from to fs:to server-side. What fs:to held before, if
anything, is first moved to fs:backup. With srcFs and srcRemote, fs:from
is first uploaded from there.

- fs - the remote all names below are in
- from - the name the file waits under until it is whole
- to - its final name
- backup - where the old version of fs:to goes
- srcFs, srcRemote - the file to upload to fs:from first (optional)

operations/copyfile followed by operations/movefile with a backup dir
does the same, but looks up every object again at each step and, where
the destination exists, compares hashes it has no use for: on SFTP that
costs a stat and an md5sum command per look. Here the object the upload
returns is moved as it is, and fs:to is looked up once.`,
	})
}

func placeFile(ctx context.Context, in rc.Params) (rc.Params, error) {
	f, err := rc.GetFsNamed(ctx, in, "fs")
	if err != nil {
		return nil, err
	}
	from, err := in.GetString("from")
	if err != nil {
		return nil, err
	}
	to, err := in.GetString("to")
	if err != nil {
		return nil, err
	}
	backup, err := in.GetString("backup")
	if err != nil {
		return nil, err
	}
	srcRemote, err := optionalString(in, "srcRemote")
	if err != nil {
		return nil, err
	}

	// Looked up first: a remote that is down fails this one lookup, not
	// an upload that operations.Copy would try again and again.
	old, err := f.NewObject(ctx, to)
	switch {
	case errors.Is(err, fs.ErrorObjectNotFound):
		old = nil
	case err != nil:
		return nil, err
	}
	var staged fs.Object
	if srcRemote != "" {
		staged, err = upload(ctx, in, f, from, srcRemote)
	} else {
		staged, err = f.NewObject(ctx, from)
	}
	if err != nil {
		return nil, err
	}
	if old != nil {
		if _, err := operations.Move(ctx, f, nil, backup, old); err != nil {
			return nil, fmt.Errorf("keeping the old version of %s: %w", to, err)
		}
	}
	if _, err := operations.Move(ctx, f, nil, to, staged); err != nil {
		return nil, err
	}
	return rc.Params{}, nil
}

// upload copies srcFs:srcRemote to f:to, which must not exist, and returns
// the object made.
func upload(ctx context.Context, in rc.Params, f fs.Fs, to, srcRemote string) (fs.Object, error) {
	srcFs, err := rc.GetFsNamed(ctx, in, "srcFs")
	if err != nil {
		return nil, err
	}
	src, err := srcFs.NewObject(ctx, srcRemote)
	if err != nil {
		return nil, err
	}
	made, err := operations.Copy(ctx, f, nil, to, src)
	if err != nil {
		return nil, err
	}
	if made == nil {
		// Some backends cannot return what they made; look it up.
		return f.NewObject(ctx, to)
	}
	return made, nil
}

func optionalString(in rc.Params, key string) (string, error) {
	value, err := in.GetString(key)
	if rc.IsErrParamNotFound(err) {
		return "", nil
	}
	return value, err
}
