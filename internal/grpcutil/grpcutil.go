// Package grpcutil holds small gRPC helpers shared by the servers.
package grpcutil

import (
	"time"

	"google.golang.org/grpc"
)

// Stop stops srv gracefully, letting calls in progress finish, but for at
// most grace; then it closes the remaining connections.
func Stop(srv *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		srv.Stop()
		<-done
	}
}
