// AWS_CA_BUNDLE, taken over from rclone 1.60's AWS SDK.

package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"

	"github.com/rclone/rclone/fs"
)

// systemBundles are where Debian and other distributions keep the
// system's CA certificates as one PEM file.
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
}

// caBundleCopy is the file takeOverCABundle wrote, removed by
// RcloneFinalize.
var caBundleCopy string

// takeOverCABundle moves AWS_CA_BUNDLE from the AWS SDK to rclone's own
// CA option. rclone 1.60's SDK cannot load a bundle into rclone's HTTP
// transport: with the variable set, every S3 call fails with
// "LoadCustomCABundleError". rclone's option (--ca-cert) is read by the
// transport every backend shares, and replaces the system's CAs, so the
// bundle is added to them, not put in their place: other remotes keep
// verifying as before. TLS stays verified throughout.
//
// The variable is cleared from Go's copy of the environment, which is
// the one the SDK reads. A bundle that cannot be read is reported and
// left out: S3 then verifies against the system's CAs.
func takeOverCABundle() {
	bundle, ok := hostEnv("AWS_CA_BUNDLE")
	if !ok {
		bundle, ok = os.LookupEnv("AWS_CA_BUNDLE")
	}
	if !ok {
		return
	}
	_ = os.Unsetenv("AWS_CA_BUNDLE")
	if bundle == "" {
		return
	}
	pem, err := os.ReadFile(bundle)
	if err == nil && !x509.NewCertPool().AppendCertsFromPEM(pem) {
		err = errors.New("no PEM certificate in it")
	}
	if err != nil {
		fs.Errorf(nil, "librclone: AWS_CA_BUNDLE %q is left out, TLS is verified against the system's CAs: %v", bundle, err)
		return
	}
	combined := pem
	for _, system := range systemBundles {
		if resolved(system) == resolved(bundle) {
			break
		}
		roots, err := os.ReadFile(system)
		if err != nil {
			continue
		}
		if !bytes.Equal(roots, pem) {
			combined = append(append(roots, '\n'), pem...)
		}
		break
	}
	path := bundle
	if !bytes.Equal(combined, pem) {
		file, err := os.CreateTemp("", "librclone-ca-*.pem")
		if err == nil {
			_, err = file.Write(combined)
			if closeErr := file.Close(); err == nil {
				err = closeErr
			}
		}
		if err != nil {
			fs.Errorf(nil, "librclone: cannot add AWS_CA_BUNDLE %q to the system's CAs, so only it is trusted: %v", bundle, err)
		} else {
			path = file.Name()
			caBundleCopy = path
		}
	}
	fs.GetConfig(context.Background()).CaCert = path
}

// resolved is path with its symlinks resolved, or as it is.
func resolved(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	return path
}

// forgetCABundleCopy removes the file takeOverCABundle wrote, if any.
func forgetCABundleCopy() {
	if caBundleCopy != "" {
		_ = os.Remove(caBundleCopy)
	}
}
