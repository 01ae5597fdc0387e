package server

import (
	"context"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/scheduler"
)

// A proposal pending when the DB replica closed may still be committed by
// the other members: the answer must not be Unavailable, which clients
// take as "not done" and repeat on another server (a create then came back
// AlreadyExists though it had succeeded).
func TestShardClosedIsAnUnknownOutcome(t *testing.T) {
	for _, err := range []error{dragonboat.ErrShardClosed, dragonboat.ErrClosed} {
		if c := status.Code(proposeError(err)); c == codes.Unavailable || c != codes.DeadlineExceeded {
			t.Errorf("%v mapped to %v, want DeadlineExceeded (outcome unknown)", err, c)
		}
	}
}

// A create that finds exactly what it asked for succeeds (the repeat of
// one whose answer was lost); one that finds something else is refused.
func TestCreateShardsIsIdempotent(t *testing.T) {
	_, c := startServer(t)
	ctx := ctxT(t)
	req := &drummerpb.CreateShardsRequest{FirstShardId: 10, Count: 3, App: "kv", Replicas: 3, AllowPending: true}
	if _, err := c.CreateShards(ctx, req); err != nil {
		t.Fatal(err)
	}
	resp, err := c.CreateShards(ctx, req)
	if err != nil || len(resp.ShardIds) != 3 || resp.ShardIds[0] != 10 {
		t.Fatalf("repeated create: %v %v", resp, err)
	}
	for name, other := range map[string]*drummerpb.CreateShardsRequest{
		"other replicas": {FirstShardId: 10, Count: 3, App: "kv", Replicas: 5, AllowPending: true},
		"other app":      {FirstShardId: 10, Count: 3, App: "other", Replicas: 3, AllowPending: true},
		"overlapping":    {FirstShardId: 12, Count: 2, App: "kv", Replicas: 3, AllowPending: true},
	} {
		if _, err := c.CreateShards(ctx, other); status.Code(err) != codes.AlreadyExists {
			t.Errorf("%s: %v, want AlreadyExists", name, err)
		}
	}
}

// A maintenance duration so long that it wraps around in nanoseconds is
// refused, not taken as the short duration it wraps to.
func TestMaintenanceDurationOverflowIsRefused(t *testing.T) {
	s, c := startServer(t)
	ctx := ctxT(t)
	deadline := time.Now().Add(30 * time.Second)
	for seq := uint64(1); ; seq++ {
		if _, err := c.Report(ctx, report("h1", seq, 0)); err != nil {
			t.Fatal(err)
		}
		var known bool
		s.sm.Read(func(st *db.State) { known = st.Hosts["h1"] != nil })
		if known {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the host was not registered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// 2^58 + 3,600,000 ms is 1 h once multiplied into nanoseconds (mod 2^64).
	wraps := uint64(1)<<58 + 3_600_000
	_, err := c.SetHostState(ctx, &drummerpb.SetHostStateRequest{HostId: "h1", Action: drummerpb.HostAdminAction_HOST_ADMIN_ACTION_MAINTENANCE, DurationMs: wraps})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("duration %d ms: %v, want InvalidArgument", wraps, err)
	}
	if _, err := c.SetHostState(ctx, &drummerpb.SetHostStateRequest{HostId: "h1", Action: drummerpb.HostAdminAction_HOST_ADMIN_ACTION_MAINTENANCE, DurationMs: 60_000}); err != nil {
		t.Fatal(err)
	}
}

// A loop too busy to answer within countsWait (a launch at 10,000 hosts
// kept it busy for minutes) does not hang GetClusterInfo: the counts of
// its last round answer.
func TestClusterInfoAnswersWhileTheLoopIsBusy(t *testing.T) {
	s, c := startServer(t)
	ctx := ctxT(t)
	deadline := time.Now().Add(30 * time.Second)
	for s.loop.counts.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no round published its counts within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	release := make(chan struct{})
	busy := make(chan struct{})
	go func() {
		_ = s.loop.do(context.Background(), func(*scheduler.Node) { close(busy); <-release })
	}()
	<-busy
	start := time.Now()
	info, err := c.GetClusterInfo(ctx, &drummerpb.GetClusterInfoRequest{})
	took := time.Since(start)
	close(release)
	if err != nil {
		t.Fatalf("GetClusterInfo with the loop busy: %v", err)
	}
	if took > 10*time.Second {
		t.Errorf("GetClusterInfo took %s with the loop busy, want about countsWait (%s)", took, countsWait)
	}
	if info.Epoch == 0 {
		t.Errorf("info %v, want the leader's epoch", info)
	}
}
