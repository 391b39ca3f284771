// Command librclone is msync's own cgo shim: built with -buildmode=c-shared
// against Debian's packaged rclone source, it exports the C ABI of upstream
// rclone's librclone (RcloneInitialize, RcloneFinalize, RcloneRPC,
// RcloneFreeString), so msync can load either this library or an upstream
// build without knowing which one it got.
//
// Calls go through rclone's job machinery, exactly as the rc HTTP server
// runs them, so the special parameters _async, _group, _config and _filter
// behave the same as with `rclone rc`.
package main

/*
#include <stdlib.h>

struct RcloneRPCResult {
	char* Output;
	int	Status;
};
*/
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"unsafe"

	"github.com/rclone/rclone/fs"
	"github.com/rclone/rclone/fs/accounting"
	"github.com/rclone/rclone/fs/config"
	"github.com/rclone/rclone/fs/config/configfile"
	"github.com/rclone/rclone/fs/rc"
	"github.com/rclone/rclone/fs/rc/jobs"
	"github.com/rclone/rclone/lib/atexit"

	// The RC commands msync relies on; the backends are in backends_all.go
	// (or a trimmed build's own list: build-trimmed.sh).
	_ "github.com/rclone/rclone/fs/operations"
	_ "github.com/rclone/rclone/fs/sync"
)

// main is required by -buildmode=c-shared and never runs.
func main() {}

// RcloneInitialize prepares the library: it reads the config file named by
// RCLONE_CONFIG (as the rclone CLI does; rclone 1.60 has no config/setpath
// RC call), installs it as the config store and starts the accounting
// machinery that core/bwlimit and core/stats depend on. It makes rclone's
// global options ("main") reachable through options/get and options/set.
//
// It also switches off rclone's atexit signal handler before any backend
// can register it: that handler takes SIGINT/SIGTERM and calls os.Exit,
// so the host would die without unmounting. The host owns those signals.
// LIBRCLONE_ATEXIT_SIGNALS=keep leaves the handler as upstream librclone
// has it, so msync's tests can prove it survives an upstream build too.
//
// It registers msync's own RC calls (place.go) as well, and hands
// AWS_CA_BUNDLE from the AWS SDK to rclone's own CA option (cabundle.go).
//
//export RcloneInitialize
func RcloneInitialize() {
	if mode, _ := hostEnv("LIBRCLONE_ATEXIT_SIGNALS"); mode != "keep" {
		atexit.IgnoreSignals()
	}
	if path, ok := hostEnv("RCLONE_CONFIG"); ok {
		if err := config.SetConfigPath(path); err != nil {
			fs.Errorf(nil, "librclone: RCLONE_CONFIG %q: %v", path, err)
		}
	}
	configfile.Install()
	takeOverCABundle()
	installRetryAfter()
	// LIBRCLONE_MSYNC_CALLS=off leaves them out, so msync's tests can prove
	// it works with an upstream build that lacks them.
	if mode, _ := hostEnv("LIBRCLONE_MSYNC_CALLS"); mode != "off" {
		addMsyncCalls()
		addMemoryLimitCall()
		addLogToCall()
	}
	// The rclone CLI registers its global options for options/get and
	// options/set when it parses its flags; a library has no flags, so it
	// registers them here, and the host can set its retry policy.
	rc.AddOption("main", fs.GetConfig(context.Background()))
	accounting.Start(context.Background())
}

// hostEnv reads a variable from the host's current environment. Go's os
// package only sees the environment as it was when the process started, so
// a host that sets RCLONE_CONFIG before calling RcloneInitialize would not
// be heard through os.LookupEnv.
func hostEnv(name string) (string, bool) {
	cName := C.CString(name)
	defer C.free(unsafe.Pointer(cName))
	value := C.getenv(cName)
	if value == nil {
		return "", false
	}
	return C.GoString(value), true
}

// RcloneFinalize runs the clean-up functions backends registered with
// rclone's atexit package (closing cache databases, flushing batches)
// without exiting: the host decides when the process ends.
//
//export RcloneFinalize
func RcloneFinalize() {
	atexit.Run()
	forgetCABundleCopy()
}

// RcloneRPC runs one RC method with a JSON object as input and returns the
// JSON answer with an HTTP-like status. The caller frees Output with
// RcloneFreeString.
//
//export RcloneRPC
func RcloneRPC(method *C.char, input *C.char) (result C.struct_RcloneRPCResult) {
	output, status := callRPC(C.GoString(method), C.GoString(input))
	result.Output = C.CString(output)
	result.Status = C.int(status)
	return result
}

// RcloneFreeString frees a string that RcloneRPC returned.
//
//export RcloneFreeString
func RcloneFreeString(str *C.char) {
	C.free(unsafe.Pointer(str))
}

// callRPC decodes the input, finds the method and runs it as a job.
func callRPC(method string, input string) (output string, status int) {
	in := make(rc.Params)
	if input != "" {
		if err := json.Unmarshal([]byte(input), &in); err != nil {
			return errorReply(method, in, fmt.Errorf("failed to read input JSON: %w", err), http.StatusBadRequest)
		}
	}
	call := rc.Calls.Get(method)
	if call == nil {
		return errorReply(method, in, fmt.Errorf("couldn't find method %q", method), http.StatusNotFound)
	}
	if call.NeedsRequest || call.NeedsResponse {
		return errorReply(method, in, fmt.Errorf("method %q needs an HTTP request and can't be called here", method), http.StatusNotFound)
	}
	_, out, err := jobs.NewJob(context.Background(), call.Fn, in)
	if err != nil {
		return errorReply(method, in, err, http.StatusInternalServerError)
	}
	if out == nil {
		out = make(rc.Params)
	}
	encoded, err := json.MarshalIndent(out, "", "\t")
	if err != nil {
		return errorReply(method, in, fmt.Errorf("failed to encode output: %w", err), http.StatusInternalServerError)
	}
	return string(encoded), http.StatusOK
}

// errorReply builds rclone's standard error object. The input is not echoed
// back (unlike the HTTP server) because it may hold secrets from _config or
// connection strings, and the host may log errors.
func errorReply(method string, in rc.Params, err error, status int) (string, int) {
	reply, status := rc.Error(method, nil, err, status)
	delete(reply, "input")
	encoded, encodeErr := json.MarshalIndent(reply, "", "\t")
	if encodeErr != nil {
		return fmt.Sprintf(`{"error":%q,"path":%q,"status":%d}`, err.Error(), method, status), status
	}
	return string(encoded), status
}
