// Package debugserver serves profiling and engine metrics on an operator's
// --debug-address: /debug/pprof/ (net/http/pprof) and /metrics
// (dragonboat's Prometheus-format health metrics). It is off by default.
// With mutual TLS the listener speaks HTTPS and every request is
// authorized by role (auth.DebugRoutes): pprof needs admin, /metrics
// viewer, from a client certificate or a web token.
package debugserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/lni/dragonboat/v4"
)

// Options configure the debug server.
type Options struct {
	// Address to listen on; empty means no debug server.
	Address string
	// TLS, when set, makes the listener HTTPS (nil: plaintext, for
	// --insecure).
	TLS *tls.Config
	// Middleware authorizes every request (auth.HTTPMiddleware); it is
	// required, also in insecure mode, so that a listener is never open by
	// omission.
	Middleware func(http.Handler) http.Handler
	Logger     *slog.Logger
}

// Server is a running debug HTTP server.
type Server struct {
	srv *http.Server
	lis net.Listener
}

// Start listens on o.Address; an empty address returns nil and no error.
func Start(o Options) (*Server, error) {
	if o.Address == "" {
		return nil, nil
	}
	if o.Middleware == nil {
		return nil, errors.New("debugserver: a Middleware is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	lis, err := net.Listen("tcp", o.Address)
	if err != nil {
		return nil, fmt.Errorf("--debug-address %s: %w", o.Address, err)
	}
	if o.TLS != nil {
		lis = tls.NewListener(lis, o.TLS)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		dragonboat.WriteHealthMetrics(w)
	})
	s := &Server{srv: &http.Server{Handler: o.Middleware(mux), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug)}, lis: lis}
	go func() {
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Logger.Error("debug server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the server; a nil server is fine.
func (s *Server) Close() {
	if s != nil {
		_ = s.srv.Close()
	}
}
