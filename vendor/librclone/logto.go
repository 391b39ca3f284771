// msync/logto: rclone's own log lines go to a file of the host's choosing
// (its msync.log) instead of the process's stderr, where they would land
// raw between the host's messages on a terminal.

package main

import (
	"context"
	"errors"
	"log"
	"os"
	"syscall"

	"github.com/rclone/rclone/fs/rc"
)

func addLogToCall() {
	rc.Add(rc.Call{
		Path:         "msync/logto",
		Fn:           logTo,
		Title:        "Send rclone's log lines to a file",
		AuthRequired: true,
		Help: `Appends rclone's log lines to a file from now on.

- path - the file: created 0600 if missing, never through a symlink`,
	})
}

func logTo(ctx context.Context, in rc.Params) (rc.Params, error) {
	path, err := in.GetString("path")
	if err != nil {
		return nil, err
	}
	if path == "" {
		return nil, rc.NewErrParamInvalid(errors.New("path is empty"))
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	// The file stays open for the life of the process: log lines may come
	// from any goroutine at any time.
	log.SetOutput(file)
	return rc.Params{}, nil
}
