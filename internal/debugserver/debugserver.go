// Package debugserver serves profiling and engine metrics on an operator's
// --debug-address: /debug/pprof/ (net/http/pprof) and /metrics
// (dragonboat's Prometheus-format health metrics). It is off by default.
package debugserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/lni/dragonboat/v4"
)

// Server is a running debug HTTP server.
type Server struct {
	srv *http.Server
	lis net.Listener
}

// Start listens on addr; an empty addr returns nil and no error.
func Start(addr string, log *slog.Logger) (*Server, error) {
	if addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-address %s: %w", addr, err)
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
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, lis: lis}
	go func() {
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug server stopped", "err", err)
		}
	}()
	return s, nil
}

// Close stops the server; a nil server is fine.
func (s *Server) Close() {
	if s != nil {
		_ = s.srv.Close()
	}
}
