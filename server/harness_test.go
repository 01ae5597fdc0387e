package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/testcluster"
)

// startServer runs a one-member drummer server in the test process (a
// real NodeHost and DB replica, plaintext gRPC on loopback) and returns it
// with a client, once it leads.
func startServer(t *testing.T) (*Server, drummerpb.DrummerClient) {
	t.Helper()
	ports, err := testcluster.FreePorts("127.0.0.1", 2)
	if err != nil {
		t.Fatal(err)
	}
	raft := fmt.Sprintf("127.0.0.1:%d", ports[0])
	s, err := New(Config{
		ReplicaID:      1,
		RaftAddress:    raft,
		GRPCAddress:    fmt.Sprintf("127.0.0.1:%d", ports[1]),
		DataDir:        t.TempDir(),
		InitialMembers: map[uint64]string{1: raft},
		RTTMillisecond: 10,
		Logger:         slog.New(slog.DiscardHandler),
		Insecure:       true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	conn, err := grpc.NewClient(s.GRPCAddress(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(256<<20), grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	deadline := time.Now().Add(time.Minute)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the server did not become the scheduler leader within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, drummerpb.NewDrummerClient(conn)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
