package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/testcluster"
	"github.com/drummerhq/drummer/kv"
)

// timeoutCounter is an slog handler counting the client's failed attempts
// that timed out (the write may have been applied, so it is retried with the
// same session series).
type timeoutCounter struct{ n *atomic.Int64 }

func (h timeoutCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h timeoutCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h timeoutCounter) WithGroup(string) slog.Handler            { return h }
func (h timeoutCounter) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "err" && status.Code(err) == codes.DeadlineExceeded {
			h.n.Add(1)
		}
		return true
	})
	return nil
}

// TestDataPlaneSurvivesHostLoss is the data-plane acceptance test: 1,000
// keys written through the Go client over 10 shards while the nodehost
// leading the most shards is SIGKILLed and Drummer repairs around it; every
// acknowledged write is readable afterwards with its last value, and a
// session's writes retried after timeouts are applied exactly once.
func TestDataPlaneSurvivesHostLoss(t *testing.T) {
	c := cluster(t, 4, nil)
	waitHosts(t, c, 4, 2*time.Minute)
	cli(t, c, "config", "set", "suspect_timeout=2s", "dead_timeout=6s")
	cli(t, c, "shard", "create", "--shard-id", "1", "--count", "10", "--replicas", "3", "--app", "kv")
	cli(t, c, "launch")
	cli(t, c, "wait", "--healthy", "--timeout", "120s")

	ctx := ctxFor(t, 5*time.Minute)
	cl, err := client.New(ctx, client.Config{Endpoints: []string{c.Endpoints}, AttemptTimeout: time.Second, Security: c.Security("app")})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// Who leads what.
	ss := shards(t, c)
	leads := map[string]int{}
	leaderHost := map[uint64]string{}
	for _, s := range ss {
		for _, m := range s.Members {
			if m.ReplicaID == s.LeaderReplicaID {
				leads[m.RaftAddress]++
				leaderHost[s.ShardID] = m.RaftAddress
			}
		}
	}
	var victim *testcluster.Node
	for _, n := range c.Nodehosts {
		if victim == nil || leads[n.RaftAddr] > leads[victim.RaftAddr] {
			victim = n
		}
	}
	// The counter lives on a shard led elsewhere; its leader's host is
	// paused (SIGSTOP) while the session writes, forcing timeouts.
	var counterShard uint64
	var paused *testcluster.Node
	for _, s := range ss {
		if leaderHost[s.ShardID] != victim.RaftAddr {
			counterShard = s.ShardID
			break
		}
	}
	for _, n := range c.Nodehosts {
		if n.RaftAddr == leaderHost[counterShard] {
			paused = n
		}
	}
	t.Logf("victim %s leads %d shards; counter on shard %d led by %s", victim.Name, leads[victim.RaftAddr], counterShard, paused.Name)

	// Writers: 1,000 keys over the 10 shards, each key written twice (the
	// second value is the one that must survive). Each write is a
	// compare-and-set on the key's previous value, retried until it is
	// acknowledged: the client retries an attempt that timed out (at
	// least once, client.Propose), so a late duplicate of a plain put of
	// the first value could land after the second (it did once, with the
	// paused nodehost holding the attempt: key-0465 read back v1). A
	// duplicate compare-and-set finds its condition gone and changes
	// nothing; a retry whose earlier attempt was applied finds its own
	// value in place.
	const keys = 1000
	var (
		written  atomic.Int64
		failures atomic.Int64
		mu       sync.Mutex
		acked    = map[int]string{}
		wg       sync.WaitGroup
	)
	put := func(i int, prev, v string) {
		key := []byte(fmt.Sprintf("key-%04d", i))
		shard := uint64(i%10 + 1)
		cas := kv.CAS{Key: key, Value: []byte(v), ExpectAbsent: prev == ""}
		if prev != "" {
			cas.Expected = []byte(prev)
		}
		for {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := cl.KV(shard).CAS(pctx, cas)
			cancel()
			if err == nil && !r.Swapped && !(r.Exists && string(r.Current) == v) {
				t.Errorf("write %s: expected %q, found %q (exists %v)", key, prev, r.Current, r.Exists)
				return
			}
			if err == nil {
				mu.Lock()
				acked[i] = v
				mu.Unlock()
				return
			}
			failures.Add(1)
			if ctx.Err() != nil {
				t.Errorf("put %s: %v", key, err)
				return
			}
		}
	}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < keys; i += 8 {
				v1 := fmt.Sprintf("v1-%d", i)
				put(i, "", v1)
				put(i, v1, fmt.Sprintf("v2-%d", i))
				written.Add(1)
				// Paced, so the faults land while writes go on.
				time.Sleep(40 * time.Millisecond)
			}
		}()
	}

	// The counter: exactly-once adds through one session.
	var timeouts atomic.Int64
	ccl, err := client.New(ctx, client.Config{Endpoints: []string{c.Endpoints}, AttemptTimeout: time.Second, Security: c.Security("app"),
		Logger: slog.New(timeoutCounter{&timeouts})})
	if err != nil {
		t.Fatal(err)
	}
	defer ccl.Close()
	sess, err := ccl.OpenSession(ctx, counterShard)
	if err != nil {
		t.Fatal(err)
	}
	var adds, unknown atomic.Int64
	stopCounter := make(chan struct{})
	counterDone := make(chan struct{})
	go func() {
		defer close(counterDone)
		for {
			select {
			case <-stopCounter:
				return
			default:
			}
			actx, cancel := context.WithTimeout(ctx, 20*time.Second)
			_, err := sess.KV().Add(actx, []byte("counter"), 1)
			cancel()
			switch {
			case err == nil:
				adds.Add(1)
			case errors.Is(err, client.ErrOutcomeUnknown):
				unknown.Add(1)
			default:
				t.Errorf("counter add: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	waitWritten := func(n int64) {
		for written.Load() < n && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitWritten(250)
	victimID := hostOf(t, c, victim)
	victim.Kill()
	t.Logf("killed %s after %d keys", victim.Name, written.Load())
	waitWritten(450)
	// Pause the counter shard's leader: session writes time out and are
	// retried with the same series elsewhere.
	if err := paused.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	if err := paused.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("paused %s for 4s around key %d", paused.Name, written.Load())
	wg.Wait()
	close(stopCounter)
	<-counterDone
	t.Logf("all %d keys written; %d failed attempts retried", keys, failures.Load())

	// Drummer repairs around the dead host.
	waitShards(t, c, 3*time.Minute, "repair", allHealthyWithout(victimID, 10))

	// Every acknowledged write is there with its last value.
	for i := 0; i < keys; i++ {
		key := []byte(fmt.Sprintf("key-%04d", i))
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, found, err := cl.KV(uint64(i%10+1)).Get(gctx, key)
		cancel()
		if err != nil || !found || string(v) != acked[i] {
			t.Fatalf("%s: got %q found=%v err=%v, want %q", key, v, found, err, acked[i])
		}
	}
	// The counter holds exactly the acknowledged adds (plus at most the
	// adds whose outcome stayed unknown).
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	v, _, err := cl.KV(counterShard).Get(gctx, []byte("counter"))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	fmt.Sscan(string(v), &got)
	t.Logf("counter: %d acknowledged adds, %d unknown, %d timed-out attempts retried, value %d", adds.Load(), unknown.Load(), timeouts.Load(), got)
	if got < adds.Load() || got > adds.Load()+unknown.Load() {
		t.Fatalf("counter is %d after %d acknowledged adds (%d unknown): an add was lost or applied twice", got, adds.Load(), unknown.Load())
	}
	if timeouts.Load() == 0 {
		t.Fatalf("no session write timed out and was retried; the exactly-once check proved nothing")
	}
	// No process that lived through the faults panicked (the victim was
	// SIGKILLed: its log ends at the kill and says nothing about them).
	for _, n := range append(append([]*testcluster.Node(nil), c.Drummers...), c.Nodehosts...) {
		if n == victim {
			continue
		}
		if strings.Contains(n.Tail(1<<20), "panic") {
			t.Fatalf("%s's log shows a panic", n.Name)
		}
	}
}
