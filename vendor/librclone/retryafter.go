// Retry-After, honoured for every remote on rclone's shared HTTP client.

package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
	_ "unsafe" // go:linkname

	"github.com/rclone/rclone/fs"
	"github.com/rclone/rclone/fs/fshttp"
)

// rclone 1.60 keeps one HTTP transport for every backend that asks for
// the shared client (fshttp.NewClient: WebDAV, OneDrive, Dropbox, Box,
// pCloud, the OAuth backends …) and makes it once, on first use. The shim
// makes it instead, wrapped, before any backend asks. Only the package's
// own variables are reached: the transport rclone builds is unchanged.
//
//go:linkname sharedTransport github.com/rclone/rclone/fs/fshttp.transport
var sharedTransport http.RoundTripper

//go:linkname sharedTransportMade github.com/rclone/rclone/fs/fshttp.noTransport
var sharedTransportMade *sync.Once

// longestRetryAfter caps what a server may ask for: a day-long Retry-After
// is a server's mistake, and the host's own pause takes over past it.
const longestRetryAfter = 10 * time.Minute

// retryAfterTransport holds back every request to a host that answered 429
// or 503 with Retry-After until that time has passed. rclone's backends on
// this client retry such answers on their own pacer's schedule, not the
// server's, so a retry came too early and failed again; now every request
// to that server waits, the retries and the requests of other transfers
// alike. A request whose context ends while it waits (a job stopped) gives
// up at once.
//
// The answer goes back to rclone as it came, with the wait added to its
// status line, which backends put in their error text: "429 Too Many
// Requests (retry after 7s)". msync reads it there and pauses the remote
// that long.
type retryAfterTransport struct {
	makeInner sync.Once
	inner     http.RoundTripper

	mu        sync.Mutex
	notBefore map[string]time.Time
}

// installRetryAfter puts the wrapper in place of rclone's shared
// transport; rclone's own is made on first use, after the host has set
// its options (timeouts, CA), as rclone would have made it.
func installRetryAfter() {
	sharedTransportMade.Do(func() {
		sharedTransport = &retryAfterTransport{notBefore: map[string]time.Time{}}
	})
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.makeInner.Do(func() {
		t.inner = fshttp.NewTransportCustom(context.Background(), nil)
	})
	if err := t.waitFor(req); err != nil {
		return nil, err
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return resp, err
	}
	wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if !ok {
		return resp, err
	}
	if wait > longestRetryAfter {
		wait = longestRetryAfter
	}
	t.mu.Lock()
	until := time.Now().Add(wait)
	if until.After(t.notBefore[req.URL.Host]) {
		t.notBefore[req.URL.Host] = until
	}
	t.mu.Unlock()
	fs.Logf(nil, "librclone: %s answered %q: its requests wait %v", req.URL.Host, resp.Status, wait)
	resp.Status = fmt.Sprintf("%s (retry after %ds)", resp.Status, int64((wait+time.Second-1)/time.Second))
	return resp, nil
}

// waitFor returns once the request's host takes requests again, or with
// the request's context's error when that ends first.
func (t *retryAfterTransport) waitFor(req *http.Request) error {
	t.mu.Lock()
	until, ok := t.notBefore[req.URL.Host]
	if ok && !time.Now().Before(until) {
		delete(t.notBefore, req.URL.Host)
		ok = false
	}
	t.mu.Unlock()
	if !ok {
		return nil
	}
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-req.Context().Done():
		return req.Context().Err()
	}
}

// parseRetryAfter reads a Retry-After value: seconds, or an HTTP date.
func parseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	if value == "" {
		return 0, false
	}
	if seconds, err := strconv.ParseInt(value, 10, 64); err == nil {
		if seconds < 0 {
			return 0, false
		}
		return time.Duration(seconds) * time.Second, true
	}
	if at, err := http.ParseTime(value); err == nil {
		if at.Before(now) {
			return 0, true
		}
		return at.Sub(now), true
	}
	return 0, false
}
