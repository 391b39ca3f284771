//go:build !msync_trimmed

// Every backend rclone has: the default build. A trimmed build
// (build-trimmed.sh, `make librclone BACKENDS="local sftp"`) leaves this
// file out and lists its own.

package main

import _ "github.com/rclone/rclone/backend/all"
