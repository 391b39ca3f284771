// msync/memorylimit: a soft cap on the Go heap, for small devices. Go 1.19
// reads GOMEMLIMIT from the environment when the library loads; this call
// sets the same limit afterwards (runtime/debug.SetMemoryLimit), so msync
// can take it as an option without touching its own environment.

package main

import (
	"context"
	"errors"
	"runtime/debug"

	"github.com/rclone/rclone/fs/rc"
)

func addMemoryLimitCall() {
	rc.Add(rc.Call{
		Path:         "msync/memorylimit",
		Fn:           setMemoryLimit,
		Title:        "Cap the Go heap (a soft limit)",
		AuthRequired: true,
		Help: `Sets the Go runtime's soft memory limit, as GOMEMLIMIT would: the
garbage collector works harder as the heap nears it.

- bytes - the limit, in bytes (more than 0)

Returns the limit set and the one before.`,
	})
}

func setMemoryLimit(ctx context.Context, in rc.Params) (rc.Params, error) {
	bytes, err := in.GetInt64("bytes")
	if err != nil {
		return nil, err
	}
	if bytes <= 0 {
		return nil, rc.NewErrParamInvalid(errors.New("bytes must be more than 0"))
	}
	previous := debug.SetMemoryLimit(bytes)
	return rc.Params{"bytes": bytes, "previous": previous}, nil
}
