// Package tlsflags holds the TLS flags shared by drummer and nodehost:
// --ca-file, --cert-file, --key-file and --insecure, and the security of
// their HTTP listeners.
package tlsflags

import (
	"crypto/tls"
	"log/slog"
	"net/http"

	"github.com/spf13/pflag"

	"github.com/drummerhq/drummer/internal/auth"
)

// Flags are the parsed TLS flags.
type Flags struct {
	auth.Files
	Insecure bool
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.CAFile, "ca-file", "", "CA certificates to trust (ca.crt made by 'drummer cert create-ca')")
	fs.StringVar(&f.CertFile, "cert-file", "", "this program's certificate (reloaded when the file changes)")
	fs.StringVar(&f.KeyFile, "key-file", "", "this program's private key")
	fs.BoolVar(&f.Insecure, "insecure", false, "run without TLS and without authentication: plaintext on every listener (trusted networks only)")
}

// Check validates the choice: certificates or --insecure.
func (f Flags) Check() error { return auth.CheckMode(f.Files, f.Insecure) }

// HTTP returns the TLS configuration (nil when insecure) and the
// authorizing middleware of an HTTP listener serving routes, for a
// program whose own certificate has role. Browsers may use web tokens:
// client certificates are verified when given, not required.
func (f Flags) HTTP(role auth.Role, routes []auth.HTTPRoute, log *slog.Logger) (*tls.Config, func(http.Handler) http.Handler, error) {
	if f.Insecure {
		mw, err := auth.HTTPMiddleware(auth.HTTPOptions{Insecure: true, Routes: routes, Logger: log})
		return nil, mw, err
	}
	src, err := auth.NewSource(auth.SourceOptions{Files: f.Files, Roles: []auth.Role{role}, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	mw, err := auth.HTTPMiddleware(auth.HTTPOptions{Source: src, Routes: routes, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	// HTTP/1.1 only: the listener is served with http.Server.Serve on a
	// tls.Listener, which does not set up HTTP/2.
	return src.ServerTLS(tls.VerifyClientCertIfGiven, "http/1.1"), mw, nil
}
