// Package web is the --http-address listener of drummer servers and
// nodehosts: Prometheus metrics, /livez and /readyz, and on drummer
// servers the Drummer service as JSON under /api/v1 (grpc-gateway calling
// the server in process) and the dashboard. With mutual TLS the listener
// speaks HTTPS and every request is authorized by role
// (auth.DrummerHTTPRoutes, auth.NodehostHTTPRoutes) from a client
// certificate or a web token; /api/v1 calls are checked again against the
// gRPC method table.
package web

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"

	"google.golang.org/grpc"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/metrics"
	"github.com/drummerhq/drummer/internal/tlsflags"
	"github.com/drummerhq/drummer/server"
)

// Server is a running HTTP listener.
type Server struct {
	srv    *http.Server
	lis    net.Listener
	https  bool
	closer func()
	done   chan struct{}
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// URL is the listener's base URL (https:// with mutual TLS).
func (s *Server) URL() string {
	if s.https {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// Close stops the listener; a nil server is fine.
func (s *Server) Close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	if s.closer != nil {
		s.closer()
	}
}

// start listens on addr and serves h behind the TLS flags' security.
func start(addr string, sec tlsflags.Flags, role auth.Role, routes []auth.HTTPRoute, h http.Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, mw, err := sec.HTTP(role, routes, log)
	if err != nil {
		return nil, fmt.Errorf("--http-address: %w", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-address %s: %w", addr, err)
	}
	if cfg != nil {
		lis = tls.NewListener(lis, cfg)
	}
	s := &Server{lis: lis, https: cfg != nil, done: make(chan struct{}), srv: &http.Server{
		Handler:           mw(h),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP listener stopped", "err", err)
		}
	}()
	return s, nil
}

// health adds /livez and /readyz; ready returns nil when the process can
// serve, else the reason.
func health(mux *http.ServeMux, ready func(context.Context) error) {
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// DrummerOptions configure a drummer server's listener.
type DrummerOptions struct {
	Address string
	// Security is the server's TLS files (role server) or Insecure.
	Security tlsflags.Flags
	Server   *server.Server
	Metrics  *metrics.Drummer
	// Dashboard, when set, is served at / (internal/dashboard).
	Dashboard func(conn grpc.ClientConnInterface, served func() string) (http.Handler, error)
	Logger    *slog.Logger
}

// MarshalOptions are the gateway's JSON options: proto field names (the
// names `drummercmd -o json` uses) and every field, zero or not.
var MarshalOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// StartDrummer starts a drummer server's HTTP listener.
func StartDrummer(o DrummerOptions) (*Server, error) {
	if o.Address == "" {
		return nil, nil
	}
	if o.Server == nil || o.Metrics == nil {
		return nil, errors.New("web.StartDrummer: Server and Metrics are required")
	}
	conn := o.Server.NewLocalConn()
	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   MarshalOptions,
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
	)
	if err := drummerpb.RegisterDrummerHandlerClient(context.Background(), gw, drummerpb.NewDrummerClient(conn)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("JSON gateway: %w", err)
	}
	mux := http.NewServeMux()
	health(mux, o.Server.Ready)
	mux.Handle("GET /metrics", metrics.Handler(o.Metrics.Registry(), o.Logger))
	mux.Handle("/api/v1/", gw)
	if o.Dashboard != nil {
		srv := o.Server
		d, err := o.Dashboard(conn, func() string {
			if srv.IsLeader() {
				return fmt.Sprintf("served by drummer %d (leader)", srv.ReplicaID())
			}
			return fmt.Sprintf("served by drummer %d (follower; reads from the leader)", srv.ReplicaID())
		})
		if err != nil {
			conn.Close()
			return nil, err
		}
		mux.Handle("/", d)
	}
	s, err := start(o.Address, o.Security, auth.RoleServer, auth.DrummerHTTPRoutes, mux, o.Logger)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.closer = func() { conn.Close() }
	return s, nil
}

// NodehostOptions configure a nodehost's listener.
type NodehostOptions struct {
	Address  string
	Security tlsflags.Flags
	Metrics  *metrics.Nodehost
	// Ready returns nil once the nodehost runs.
	Ready  func(context.Context) error
	Logger *slog.Logger
}

// StartNodehost starts a nodehost's HTTP listener.
func StartNodehost(o NodehostOptions) (*Server, error) {
	if o.Address == "" {
		return nil, nil
	}
	if o.Metrics == nil || o.Ready == nil {
		return nil, errors.New("web.StartNodehost: Metrics and Ready are required")
	}
	mux := http.NewServeMux()
	health(mux, o.Ready)
	mux.Handle("GET /metrics", metrics.Handler(o.Metrics.Registry(), o.Logger))
	return start(o.Address, o.Security, auth.RoleNodehost, auth.NodehostHTTPRoutes, mux, o.Logger)
}
