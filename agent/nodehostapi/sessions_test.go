package nodehostapi_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/agent/nodehostapi"
	"github.com/drummerhq/drummer/agent/nodehostapi/nhtest"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/kv"
)

func oneHost(t *testing.T, opts nodehostapi.Options) drummerpb.NodehostAPIClient {
	t.Helper()
	c := nhtest.New(t, nhtest.Options{Hosts: 1, RTTMillisecond: 10, Service: opts})
	c.StartShard(kvShard, func(shardID, replicaID uint64) sm.IStateMachine {
		return kv.NewFactory(kv.Options{})(shardID, replicaID)
	}, nhtest.ShardOptions{})
	c.WaitLeader(kvShard)
	conn, err := grpc.NewClient(c.Hosts[0].APIAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return drummerpb.NewNodehostAPIClient(conn)
}

// Any caller can open sessions; dragonboat keeps 4096 per shard and evicts
// the least recently used. A flood of OpenSession must not evict a live
// session (a retry of its proposal on a new session would apply it twice):
// the nodehost bounds the sessions it opens.
func TestSessionFloodDoesNotEvictLiveSessions(t *testing.T) {
	cl := oneHost(t, nodehostapi.Options{})
	live, err := openSession(cl, kvShard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := propose(cl, &drummerpb.ProposeRequest{ShardId: kvShard, Session: live, Command: put("a", "1")}); err != nil {
		t.Fatal(err)
	}
	// The flood: more OpenSession calls than dragonboat's LRU holds.
	var opened, refused atomic.Int64
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= 4200 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := cl.OpenSession(ctx, &drummerpb.OpenSessionRequest{ShardId: kvShard})
				cancel()
				switch {
				case err == nil:
					opened.Add(1)
				case status.Code(err) == codes.ResourceExhausted:
					refused.Add(1)
				default:
					t.Errorf("open: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("flood: %d opened, %d refused", opened.Load(), refused.Load())
	live.SeriesId, live.RespondedTo = 2, 1
	if _, err := propose(cl, &drummerpb.ProposeRequest{ShardId: kvShard, Session: live, Command: put("a", "2")}); err != nil {
		t.Fatalf("the live session did not survive the flood: %v", err)
	}
}

// At its bound a caller's new session replaces its longest-idle one,
// closed explicitly (its client sees it rejected); a session in use is
// never closed, and one caller's sessions do not count against another's.
func TestSessionBoundsAndIdleExpiry(t *testing.T) {
	const idle = 300 * time.Millisecond
	cl := oneHost(t, nodehostapi.Options{MaxSessionsPerOwner: 2, SessionIdleTimeout: idle,
		SessionOwner: func(ctx context.Context) string {
			md, _ := metadata.FromIncomingContext(ctx)
			return strings.Join(md.Get("owner"), "")
		}})
	as := func(owner string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "owner", owner)
	}
	open := func(owner string) (*drummerpb.Session, error) {
		ctx, cancel := context.WithTimeout(as(owner), 10*time.Second)
		defer cancel()
		return cl.OpenSession(ctx, &drummerpb.OpenSessionRequest{ShardId: kvShard})
	}
	use := func(s *drummerpb.Session, v string) error {
		_, err := propose(cl, &drummerpb.ProposeRequest{ShardId: kvShard, Session: s, Command: put("k", v)})
		s.RespondedTo = s.SeriesId
		s.SeriesId++
		return err
	}
	a, err := open("alice")
	if err != nil {
		t.Fatal(err)
	}
	b, err := open("alice")
	if err != nil {
		t.Fatal(err)
	}
	_, err = open("alice")
	wantErr(t, err, codes.ResourceExhausted, nodehostapi.ReasonTooManySessions)
	if _, err := open("bob"); err != nil {
		t.Fatalf("another caller is limited by alice's sessions: %v", err)
	}
	time.Sleep(idle + 100*time.Millisecond)
	if err := use(b, "b"); err != nil {
		t.Fatal(err)
	}
	c, err := open("alice")
	if err != nil {
		t.Fatalf("no room made from the idle session: %v", err)
	}
	wantErr(t, use(a, "a"), codes.FailedPrecondition, nodehostapi.ReasonSessionRejected)
	if err := use(b, "b2"); err != nil {
		t.Fatalf("the session in use was closed: %v", err)
	}
	if err := use(c, "c"); err != nil {
		t.Fatal(err)
	}
	// Closing one makes room at once.
	if err := closeSession(cl, c); err != nil {
		t.Fatal(err)
	}
	if _, err := open("alice"); err != nil {
		t.Fatalf("after close: %v", err)
	}
}
