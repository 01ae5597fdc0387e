package chaos

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/drummerhq/drummer/agent/nodehostapi/nhtest"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/kv"
)

// TestRegressClosedProposalMayBeApplied pins a bug the chaos analysis
// found in the client: a proposal pending on a replica that is stopped
// fails there with CLOSED (dragonboat terminates it), yet the other
// members may still commit it. The client used to treat CLOSED as "not
// applied", so a write could fail without ErrOutcomeUnknown and still be
// applied, which breaks the history of a linearizability checker (and any
// application trusting the error).
func TestRegressClosedProposalMayBeApplied(t *testing.T) {
	c := nhtest.New(t, nhtest.Options{RTTMillisecond: 10})
	// Applies wait until the follower's replica is stopped, so the
	// proposal is still pending there when it stops, every time (a timed
	// delay let the Put complete first now and then, and the test then
	// checked nothing).
	gate := make(chan struct{})
	slow := kv.NewFactory(kv.Options{ApplyDelay: func() time.Duration {
		select {
		case <-gate:
		case <-time.After(5 * time.Second):
		}
		return 0
	}})
	c.StartShard(1, slow, nhtest.ShardOptions{})
	leader := c.WaitLeader(1)
	f := (leader + 1) % 3
	// The client knows only the follower, which forwards to the leader.
	loc := func(context.Context, []uint64) ([]*drummerpb.ShardLocation, error) {
		l := c.Location(1)
		var ms []*drummerpb.MemberStatus
		for _, m := range l.Members {
			if m.ReplicaId == uint64(f+1) {
				ms = append(ms, m)
			}
		}
		l.Members = ms
		return []*drummerpb.ShardLocation{l}, nil
	}
	cl, err := client.New(context.Background(), client.Config{Locator: client.LocatorFunc(loc), AttemptTimeout: 5 * time.Second, Security: client.Security{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	stopped := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		err := c.Hosts[f].NH.StopShard(1)
		close(gate)
		stopped <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err = cl.KV(1).Put(ctx, []byte("x"), []byte("written"))
	cancel()
	if serr := <-stopped; serr != nil {
		t.Fatalf("stop the follower's replica: %v", serr)
	}
	q, _ := kv.EncodeGet([]byte("x"))
	var res kv.Result
	deadline := time.Now().Add(10 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		out, rerr := c.Hosts[leader].NH.SyncRead(rctx, 1, q)
		rcancel()
		if rerr == nil {
			res, _ = kv.DecodeQueryResult(out.([]byte))
			if res.Found || time.Now().After(deadline) {
				break
			}
		} else if time.Now().After(deadline) {
			t.Fatal(rerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("Put: %v; afterwards x = %q (found %v)", err, res.Value, res.Found)
	if err == nil {
		t.Fatal("the Put completed although its replica was stopped while it was pending: the test did not exercise CLOSED")
	}
	if !res.Found {
		t.Fatal("the write was not applied by the other members: the test did not exercise a CLOSED proposal that commits")
	}
	if !errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("the write was applied, but the client reported a failure without ErrOutcomeUnknown: %v", err)
	}
}
