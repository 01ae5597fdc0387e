package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/agent/nodehostapi"
	"github.com/drummerhq/drummer/agent/nodehostapi/nhtest"
	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/kv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	kvShard   = 1
	diskShard = 2
)

// world is a 3-host cluster with a kv shard, an optional on-disk shard and
// a fake Drummer that locates them.
type world struct {
	c      *nhtest.Cluster
	fake   *nhtest.FakeDrummer
	delays [4]atomic.Int64 // per replica: number of upcoming kv applies to slow down
	delay  atomic.Int64    // by how much (ns)
}

func newWorld(t *testing.T, disk bool) *world {
	w := &world{}
	w.c = nhtest.New(t, nhtest.Options{RTTMillisecond: 20})
	w.c.StartShard(kvShard, func(shardID, replicaID uint64) sm.IStateMachine {
		n := &w.delays[replicaID]
		return kv.NewFactory(kv.Options{ApplyDelay: func() time.Duration {
			if n.Add(-1) >= 0 {
				return time.Duration(w.delay.Load())
			}
			n.Store(0)
			return 0
		}})(shardID, replicaID)
	}, nhtest.ShardOptions{})
	if disk {
		w.c.StartOnDiskShard(diskShard, func(uint64, uint64) sm.IOnDiskStateMachine { return &diskSM{} }, nhtest.ShardOptions{})
		w.c.WaitLeader(diskShard)
	}
	w.c.WaitLeader(kvShard)
	w.fake = nhtest.StartFakeDrummer(t, w.c.Location)
	return w
}

// slowNext makes the next n kv applies take d each.
func (w *world) slowNext(n int, d time.Duration) {
	w.delay.Store(int64(d))
	for i := range w.delays {
		w.delays[i].Store(int64(n))
	}
}

func (w *world) client(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Locator == nil && cfg.Endpoints == nil {
		cfg.Endpoints = []string{w.fake.Addr}
	}
	cfg.Insecure = true
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestReasonsMatchServer(t *testing.T) {
	pairs := [][2]string{
		{ReasonShardNotHere, nodehostapi.ReasonShardNotHere},
		{ReasonShardNotReady, nodehostapi.ReasonShardNotReady},
		{ReasonBusy, nodehostapi.ReasonBusy},
		{ReasonClosed, nodehostapi.ReasonClosed},
		{ReasonTimeout, nodehostapi.ReasonTimeout},
		{ReasonAborted, nodehostapi.ReasonAborted},
		{ReasonSessionRejected, nodehostapi.ReasonSessionRejected},
		{ReasonSessionsUnsupported, nodehostapi.ReasonSessionsUnsupported},
		{ReasonInvalidSession, nodehostapi.ReasonInvalidSession},
		{ReasonPayloadTooLarge, nodehostapi.ReasonPayloadTooLarge},
		{ReasonNoDeadline, nodehostapi.ReasonNoDeadline},
		{ReasonDeadlineTooShort, nodehostapi.ReasonDeadlineTooShort},
		{ReasonInvalidRequest, nodehostapi.ReasonInvalidRequest},
		{ReasonCanceled, nodehostapi.ReasonCanceled},
		{ReasonStateMachine, nodehostapi.ReasonStateMachine},
		{ReasonInternal, nodehostapi.ReasonInternal},
	}
	for _, p := range pairs {
		if p[0] != p[1] {
			t.Errorf("client %q != server %q", p[0], p[1])
		}
	}
}

func TestClassify(t *testing.T) {
	withReason := func(c codes.Code, reason string) error {
		st, _ := status.New(c, "x").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: nodehostapi.ErrorDomain})
		return st.Err()
	}
	alive := context.Background()
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		err  error
		ctx  context.Context
		want action
	}{
		{"not here", withReason(codes.NotFound, ReasonShardNotHere), alive, action{kind: actNext, relocate: true}},
		{"not ready", withReason(codes.Unavailable, ReasonShardNotReady), alive, action{kind: actNext}},
		{"busy", withReason(codes.Unavailable, ReasonBusy), alive, action{kind: actBackoff}},
		{"closed", withReason(codes.Unavailable, ReasonClosed), alive, action{kind: actNext, ambiguous: true, down: true, relocate: true}},
		{"timeout", withReason(codes.DeadlineExceeded, ReasonTimeout), alive, action{kind: actNext, ambiguous: true}},
		{"rejected", withReason(codes.FailedPrecondition, ReasonSessionRejected), alive, action{kind: actStop}},
		{"invalid", withReason(codes.InvalidArgument, ReasonPayloadTooLarge), alive, action{kind: actStop}},
		{"too short", withReason(codes.InvalidArgument, ReasonDeadlineTooShort), alive, action{kind: actGiveUp}},
		{"sm error", withReason(codes.Unknown, ReasonStateMachine), alive, action{kind: actStop}},
		{"transport down", status.Error(codes.Unavailable, "connection refused"), alive, action{kind: actNext, ambiguous: true, down: true, relocate: true}},
		{"attempt expired", status.Error(codes.DeadlineExceeded, "deadline"), alive, action{kind: actNext, ambiguous: true, relocate: true}},
		{"unimplemented", status.Error(codes.Unimplemented, "no"), alive, action{kind: actStop}},
		{"caller gone", status.Error(codes.Canceled, "canceled"), dead, action{kind: actGiveUp, ambiguous: true}},
		{"caller gone, definite", withReason(codes.NotFound, ReasonShardNotHere), dead, action{kind: actGiveUp}},
	}
	for _, c := range cases {
		if got := classify(c.err, c.ctx); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestDataPlane(t *testing.T) {
	w := newWorld(t, true)
	c := w.client(t, Config{})
	ctx := ctxT(t, 30*time.Second)

	t.Run("propose and read", func(t *testing.T) {
		cmd, _ := kv.EncodePut([]byte("a"), []byte("1"))
		r, err := c.Propose(ctx, kvShard, cmd)
		if err != nil || r.Value != uint64(kv.StatusOK) {
			t.Fatalf("propose: %v %v", r, err)
		}
		q, _ := kv.EncodeGet([]byte("a"))
		for _, read := range []func(context.Context, uint64, []byte) ([]byte, error){c.Read, c.StaleRead} {
			out, err := read(ctx, kvShard, q)
			if err != nil {
				t.Fatal(err)
			}
			if res, _ := kv.DecodeQueryResult(out); string(res.Value) != "1" {
				t.Fatalf("read: %+v", res)
			}
		}
		loc, err := c.Locate(ctx, kvShard)
		if err != nil || len(loc.GetMembers()) != 3 {
			t.Fatalf("locate: %v %v", loc, err)
		}
	})

	t.Run("kv", func(t *testing.T) {
		k := c.KV(kvShard)
		if err := k.Put(ctx, []byte("x"), []byte("1")); err != nil {
			t.Fatal(err)
		}
		v, found, err := k.Get(ctx, []byte("x"))
		if err != nil || !found || string(v) != "1" {
			t.Fatalf("get: %q %v %v", v, found, err)
		}
		if _, found, err := k.Get(ctx, []byte("missing")); err != nil || found {
			t.Fatalf("get missing: %v %v", found, err)
		}
		r, err := k.CAS(ctx, kv.CAS{Key: []byte("x"), Expected: []byte("0"), Value: []byte("2")})
		if err != nil || r.Swapped || !r.Exists || string(r.Current) != "1" {
			t.Fatalf("cas mismatch: %+v %v", r, err)
		}
		r, err = k.CAS(ctx, kv.CAS{Key: []byte("x"), Expected: []byte("1"), Value: []byte("2")})
		if err != nil || !r.Swapped {
			t.Fatalf("cas: %+v %v", r, err)
		}
		// Linearizable: the write is visible on the next read.
		if v, _, _ := k.Get(ctx, []byte("x")); string(v) != "2" {
			t.Fatalf("after cas: %q", v)
		}
		// Stale reads converge.
		deadline := time.Now().Add(10 * time.Second)
		for {
			v, _, err := k.StaleGet(ctx, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			if string(v) == "2" || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if existed, err := k.Delete(ctx, []byte("x")); err != nil || !existed {
			t.Fatalf("delete: %v %v", existed, err)
		}
		if existed, err := k.Delete(ctx, []byte("x")); err != nil || existed {
			t.Fatalf("delete again: %v %v", existed, err)
		}
		// Encoding errors fail before any call.
		if err := k.Put(ctx, nil, nil); !errors.Is(err, kv.ErrEmptyKey) {
			t.Fatalf("empty key: %v", err)
		}
		if _, _, err := k.Get(ctx, make([]byte, kv.MaxKeySize+1)); !errors.Is(err, kv.ErrKeyTooLarge) {
			t.Fatalf("big key: %v", err)
		}
	})

	t.Run("session exactly once", func(t *testing.T) {
		s, err := c.OpenSession(ctx, kvShard)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(ctx)
		k := s.KV()
		r, err := k.CAS(ctx, kv.CAS{Key: []byte("lock"), ExpectAbsent: true, Value: []byte("me")})
		if err != nil || !r.Swapped {
			t.Fatalf("cas: %+v %v", r, err)
		}
		if s.s.SeriesId != 2 || s.s.RespondedTo != 1 {
			t.Fatalf("series %v", s.s)
		}
		if _, err := k.Delete(ctx, []byte("lock")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("unknown shard", func(t *testing.T) {
		_, err := c.Propose(ctx, 777, []byte("x"))
		if !errors.Is(err, ErrShardNotFound) || status.Code(err) != codes.NotFound {
			t.Fatalf("err %v", err)
		}
		if _, err := c.Read(ctx, 0, nil); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("shard 0: %v", err)
		}
	})

	t.Run("on-disk shard", func(t *testing.T) {
		_, err := c.OpenSession(ctx, diskShard)
		var e *Error
		if !errors.As(err, &e) || Reason(err) != ReasonSessionsUnsupported || status.Code(err) != codes.InvalidArgument || e.Attempts != 1 {
			t.Fatalf("err %v", err)
		}
		r, err := c.Propose(ctx, diskShard, []byte("x"))
		if err != nil || r.Value == 0 {
			t.Fatalf("propose: %v %v", r, err)
		}
	})

	t.Run("session rejected", func(t *testing.T) {
		s, err := c.OpenSession(ctx, kvShard)
		if err != nil {
			t.Fatal(err)
		}
		// Someone else closes it (as an LRU eviction would).
		other := &Session{c: c, s: &drummerpb.Session{ShardId: kvShard, ClientId: s.s.ClientId, SeriesId: 1}}
		if err := other.Close(ctx); err != nil {
			t.Fatal(err)
		}
		cmd, _ := kv.EncodePut([]byte("r"), nil)
		_, err = s.Propose(ctx, cmd)
		if !errors.Is(err, ErrSessionRejected) || status.Code(err) != codes.FailedPrecondition || Reason(err) != ReasonSessionRejected {
			t.Fatalf("err %v", err)
		}
		if _, err2 := s.Propose(ctx, cmd); !errors.Is(err2, ErrSessionRejected) {
			t.Fatalf("second: %v", err2)
		}
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Propose(ctx, cmd); !errors.Is(err, ErrSessionClosed) {
			t.Fatalf("after close: %v", err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := c.OpenSession(ctx, kvShard)
				if err != nil {
					errs <- err
					return
				}
				defer s.Close(ctx)
				for i := 0; i < 10; i++ {
					key := []byte(fmt.Sprintf("g%d-%d", g, i))
					if r, err := s.KV().CAS(ctx, kv.CAS{Key: key, ExpectAbsent: true, Value: key}); err != nil || !r.Swapped {
						errs <- fmt.Errorf("cas %s: %+v %v", key, r, err)
						return
					}
					if _, found, err := c.KV(kvShard).Get(ctx, key); err != nil || !found {
						errs <- fmt.Errorf("get %s: %v %v", key, found, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	t.Run("closed client", func(t *testing.T) {
		c2 := w.client(t, Config{})
		c2.Close()
		if _, err := c2.Propose(ctx, kvShard, []byte("x")); !errors.Is(err, ErrClientClosed) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestTimeoutRetriesKeepTheSeries(t *testing.T) {
	w := newWorld(t, false)
	failures := &countingHandler{}
	c := w.client(t, Config{AttemptTimeout: 150 * time.Millisecond, Logger: slog.New(failures)})
	ctx := ctxT(t, 30*time.Second)
	s, err := c.OpenSession(ctx, kvShard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)

	// The first apply takes longer than an attempt: the first attempt
	// times out, the retry (same series, maybe another host) returns the
	// first result. Had the retry used a new series, the CAS would have
	// been applied twice and answered "mismatch".
	w.slowNext(1, 500*time.Millisecond)
	r, err := s.KV().CAS(ctx, kv.CAS{Key: []byte("once"), ExpectAbsent: true, Value: []byte("1")})
	if err != nil || !r.Swapped {
		t.Fatalf("cas: %+v %v", r, err)
	}
	if s.s.SeriesId != 2 {
		t.Fatalf("series advanced to %d, want 2", s.s.SeriesId)
	}
	if failures.n.Load() == 0 {
		t.Fatal("no attempt failed: the test did not exercise a retry")
	}

	// Without a session the same situation applies the command twice (at
	// least once): the retry's CAS finds the key created by the first.
	w.slowNext(1, 500*time.Millisecond)
	res, err := c.KV(kvShard).CAS(ctx, kv.CAS{Key: []byte("twice"), ExpectAbsent: true, Value: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Swapped {
		t.Log("the no-op retry happened to not duplicate (the first attempt answered in time)")
	}
}

func TestOutcomeUnknownThenContinue(t *testing.T) {
	w := newWorld(t, false)
	c := w.client(t, Config{AttemptTimeout: 100 * time.Millisecond})
	ctx := ctxT(t, 30*time.Second)
	s, err := c.OpenSession(ctx, kvShard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	cmd, _ := kv.EncodeCAS(kv.CAS{Key: []byte("k"), ExpectAbsent: true, Value: []byte("1")})

	// The caller's deadline ends while the apply is slow.
	w.slowNext(1, time.Second)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	_, err = s.Propose(short, cmd)
	cancel()
	if !errors.Is(err, ErrOutcomeUnknown) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err %v", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v past a 300ms deadline", el)
	}
	// Same command again: same series, the first result.
	r, err := s.Propose(ctx, cmd)
	if err != nil || r.Value != uint64(kv.StatusOK) {
		t.Fatalf("continue: %v %v", r, err)
	}
	if s.s.SeriesId != 2 {
		t.Fatalf("series %d", s.s.SeriesId)
	}

	// A different command after an unknown outcome abandons the old
	// series; the session stays usable.
	w.slowNext(1, time.Second)
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	other, _ := kv.EncodePut([]byte("p"), []byte("1"))
	_, err = s.Propose(short, other)
	cancel()
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err %v", err)
	}
	third, _ := kv.EncodePut([]byte("q"), []byte("1"))
	if r, err := s.Propose(ctx, third); err != nil || r.Value != uint64(kv.StatusOK) {
		t.Fatalf("after abandon: %v %v", r, err)
	}
	if s.s.SeriesId != 4 || s.s.RespondedTo != 3 {
		t.Fatalf("series %v", s.s)
	}
}

func TestRoutingAroundBadLocations(t *testing.T) {
	w := newWorld(t, false)
	// A host that runs no replica of the shard, and an address where
	// nothing listens.
	extra := nhtest.New(t, nhtest.Options{Hosts: 1, RTTMillisecond: 10})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()

	var bad atomic.Bool
	bad.Store(true)
	w.fake.SetLocate(func(id uint64) *drummerpb.ShardLocation {
		loc := w.c.Location(id)
		if id == kvShard && bad.Load() {
			// Drummer's view is out of date: the shard "moved" to hosts
			// that no longer have it, one of them the "leader".
			loc.Members = []*drummerpb.MemberStatus{
				{ReplicaId: 9, ApiAddress: extra.Hosts[0].APIAddr, State: "live", IsLeader: true},
				{ReplicaId: 8, ApiAddress: deadAddr, State: "live"},
			}
			bad.Store(false)
		}
		return loc
	})
	c := w.client(t, Config{})
	ctx := ctxT(t, 30*time.Second)
	if err := c.KV(kvShard).Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if n := w.fake.Calls(); n < 2 {
		t.Fatalf("the location was not refreshed (%d LocateShards calls)", n)
	}
	if !c.pool.isDown(deadAddr) && c.locs.preferred(kvShard) == deadAddr {
		t.Fatal("dead address preferred")
	}
}

func TestLeaderFailover(t *testing.T) {
	w := newWorld(t, false)
	c := w.client(t, Config{AttemptTimeout: 500 * time.Millisecond})
	ctx := ctxT(t, 60*time.Second)
	k := c.KV(kvShard)
	if err := k.Put(ctx, []byte("before"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	leader := w.c.WaitLeader(kvShard)
	w.c.StopHost(leader)
	// The client keeps working: the old leader's host refuses connections,
	// the others answer "not ready" until a new leader is elected.
	for i := 0; i < 20; i++ {
		if err := k.Put(ctx, []byte(fmt.Sprint("after", i)), []byte("1")); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if v, found, err := k.Get(ctx, []byte("before")); err != nil || !found || string(v) != "1" {
		t.Fatalf("get: %q %v %v", v, found, err)
	}
}

func TestLocatorOutage(t *testing.T) {
	w := newWorld(t, false)
	c := w.client(t, Config{LocationTTL: time.Millisecond, Preload: []uint64{kvShard}})
	ctx := ctxT(t, 30*time.Second)
	w.fake.SetFailure(status.Error(codes.Unavailable, "drummer down"))
	// Known locations keep being used while Drummer is down.
	for i := 0; i < 5; i++ {
		time.Sleep(2 * time.Millisecond)
		if err := c.KV(kvShard).Put(ctx, []byte("k"), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	// Unknown ones fail when the caller's deadline ends.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := c.Propose(short, 55, []byte("x"))
	if status.Code(err) != codes.DeadlineExceeded || errors.Is(err, ErrShardNotFound) {
		t.Fatalf("err %v", err)
	}
	// Preload fails for unknown shards.
	w.fake.SetFailure(nil)
	if _, err := New(ctx, Config{Endpoints: []string{w.fake.Addr}, Preload: []uint64{kvShard, 55}, Security: Security{Insecure: true}}); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("preload: %v", err)
	}
}

func TestNoQuorumHonoursDeadline(t *testing.T) {
	w := newWorld(t, false)
	c := w.client(t, Config{AttemptTimeout: 200 * time.Millisecond})
	ctx := ctxT(t, 30*time.Second)
	if err := c.KV(kvShard).Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	w.c.StopHost(0)
	w.c.StopHost(1)
	short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.KV(kvShard).Put(short, []byte("k"), []byte("w"))
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("returned after %v, deadline was 700ms", el)
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Attempts < 1 {
		t.Fatalf("err %#v", err)
	}
	// Canceling returns promptly too.
	cctx, ccancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, ccancel)
	_, _, err = c.KV(kvShard).Get(cctx, []byte("k"))
	if status.Code(err) != codes.Canceled {
		t.Fatalf("canceled: %v", err)
	}
}

// countingHandler counts the client's "attempt failed" debug logs.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "attempt failed") {
		h.n.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// diskSM is a minimal on-disk state machine: a counter of applied entries.
type diskSM struct{ n atomic.Uint64 }

func (d *diskSM) Open(<-chan struct{}) (uint64, error) { return 0, nil }
func (d *diskSM) Update(es []sm.Entry) ([]sm.Entry, error) {
	for i := range es {
		es[i].Result = sm.Result{Value: d.n.Add(1)}
	}
	return es, nil
}
func (d *diskSM) Lookup(any) (any, error)                              { return []byte(fmt.Sprint(d.n.Load())), nil }
func (d *diskSM) Sync() error                                          { return nil }
func (d *diskSM) PrepareSnapshot() (any, error)                        { return nil, nil }
func (d *diskSM) SaveSnapshot(any, io.Writer, <-chan struct{}) error   { return nil }
func (d *diskSM) RecoverFromSnapshot(io.Reader, <-chan struct{}) error { return nil }
func (d *diskSM) Close() error                                         { return nil }
