package nodehostapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
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
	kvShard     = 1
	diskShard   = 2
	oddShard    = 3
	maxPayload  = 64 << 10
	callTimeout = 10 * time.Second
)

// env is a 3-host cluster running a kv shard (with a switchable apply
// delay), an on-disk shard and a shard whose Lookup misbehaves.
type env struct {
	c       *nhtest.Cluster
	clients []drummerpb.NodehostAPIClient
	delay   atomic.Int64 // kv apply delay, ns
	sms     sync.Map     // replica ID → *countingKV of the kv shard
	// recovered counts kv RecoverFromSnapshot calls.
	recovered atomic.Int64
}

// countingKV counts snapshot recoveries.
type countingKV struct {
	*kv.StateMachine
	recovered *atomic.Int64
}

func (c *countingKV) RecoverFromSnapshot(r io.Reader, fs []sm.SnapshotFile, done <-chan struct{}) error {
	c.recovered.Add(1)
	return c.StateMachine.RecoverFromSnapshot(r, fs, done)
}

func newEnv(t *testing.T) *env {
	e := &env{}
	e.c = nhtest.New(t, nhtest.Options{RTTMillisecond: 50, Service: nodehostapi.Options{
		MaxPayloadBytes: maxPayload,
		AppName: func(shardID, _ uint64) string {
			if shardID == kvShard {
				return kv.AppName
			}
			return "other"
		},
	}})
	factory := kv.NewFactory(kv.Options{ApplyDelay: func() time.Duration { return time.Duration(e.delay.Load()) }})
	e.c.StartShard(kvShard, func(shardID, replicaID uint64) sm.IStateMachine {
		s := &countingKV{StateMachine: factory(shardID, replicaID).(*kv.StateMachine), recovered: &e.recovered}
		e.sms.Store(replicaID, s)
		return s
	}, nhtest.ShardOptions{SnapshotEntries: 20, CompactionOverhead: 5})
	e.c.StartOnDiskShard(diskShard, func(uint64, uint64) sm.IOnDiskStateMachine { return &diskSM{} }, nhtest.ShardOptions{})
	e.c.StartShard(oddShard, func(uint64, uint64) sm.IStateMachine { return &oddSM{} }, nhtest.ShardOptions{})
	for _, id := range []uint64{kvShard, diskShard, oddShard} {
		e.c.WaitLeader(id)
	}
	for _, h := range e.c.Hosts {
		cc, err := grpc.NewClient(h.APIAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		e.clients = append(e.clients, drummerpb.NewNodehostAPIClient(cc))
	}
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// call runs f with a fresh 3s deadline, retrying transient failures
// (Unavailable, DeadlineExceeded: leader changes on a loaded machine) for
// up to a minute. Only use it where a retry is harmless.
func call[T any](f func(ctx context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		v, err := f(ctx)
		cancel()
		if c := status.Code(err); (c != codes.Unavailable && c != codes.DeadlineExceeded) || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func propose(cl drummerpb.NodehostAPIClient, req *drummerpb.ProposeRequest) (*drummerpb.ProposeResponse, error) {
	return call(func(ctx context.Context) (*drummerpb.ProposeResponse, error) { return cl.Propose(ctx, req) })
}

func readReq(cl drummerpb.NodehostAPIClient, req *drummerpb.ReadRequest) (*drummerpb.ReadResponse, error) {
	return call(func(ctx context.Context) (*drummerpb.ReadResponse, error) { return cl.Read(ctx, req) })
}

func openSession(cl drummerpb.NodehostAPIClient, shardID uint64) (*drummerpb.Session, error) {
	return call(func(ctx context.Context) (*drummerpb.Session, error) {
		return cl.OpenSession(ctx, &drummerpb.OpenSessionRequest{ShardId: shardID})
	})
}

func closeSession(cl drummerpb.NodehostAPIClient, s *drummerpb.Session) error {
	_, err := call(func(ctx context.Context) (*drummerpb.CloseSessionResponse, error) {
		return cl.CloseSession(ctx, &drummerpb.CloseSessionRequest{Session: s})
	})
	return err
}

func errInfo(err error) *errdetails.ErrorInfo {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	return nil
}

func wantErr(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v/%s", code, reason)
	}
	ei := errInfo(err)
	if status.Code(err) != code || ei == nil || ei.Reason != reason || ei.Domain != nodehostapi.ErrorDomain {
		t.Fatalf("error %v (info %v), want %v/%s", err, ei, code, reason)
	}
	if ei.Metadata[nodehostapi.MetaHostID] == "" || ei.Metadata[nodehostapi.MetaRetry] == "" {
		t.Fatalf("error info lacks metadata: %v", ei)
	}
}

func put(key, value string) []byte {
	b, err := kv.EncodePut([]byte(key), []byte(value))
	if err != nil {
		panic(err)
	}
	return b
}

func create(key, value string) []byte {
	b, err := kv.EncodeCAS(kv.CAS{Key: []byte(key), ExpectAbsent: true, Value: []byte(value)})
	if err != nil {
		panic(err)
	}
	return b
}

func getQ(key string) []byte {
	b, err := kv.EncodeGet([]byte(key))
	if err != nil {
		panic(err)
	}
	return b
}

func status1(t *testing.T, r *drummerpb.ProposeResponse) kv.Status {
	t.Helper()
	res, err := kv.DecodeUpdateResult(r.GetValue(), r.GetData())
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

func (e *env) read(t *testing.T, host int, key string, stale bool) kv.Result {
	t.Helper()
	resp, err := readReq(e.clients[host], &drummerpb.ReadRequest{ShardId: kvShard, Query: getQ(key), Stale: stale})
	if err != nil {
		t.Fatalf("read on host %d: %v", host, err)
	}
	res, err := kv.DecodeQueryResult(resp.GetResult())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestService(t *testing.T) {
	e := newEnv(t)
	leader := e.c.WaitLeader(kvShard)
	follower := (leader + 1) % 3

	t.Run("propose without session from every host, read everywhere", func(t *testing.T) {
		for i, cl := range e.clients {
			r, err := propose(cl, &drummerpb.ProposeRequest{ShardId: kvShard, Command: put(fmt.Sprint("k", i), "v")})
			if err != nil {
				t.Fatalf("host %d: %v", i, err)
			}
			if s := status1(t, r); s != kv.StatusOK {
				t.Fatalf("host %d: status %v", i, s)
			}
		}
		for i := range e.clients {
			for j := range e.clients {
				if r := e.read(t, i, fmt.Sprint("k", j), false); !r.Found || string(r.Value) != "v" {
					t.Fatalf("linearizable read of k%d on host %d: %+v", j, i, r)
				}
			}
		}
		// A stale read on the leader sees its own applied writes.
		if r := e.read(t, leader, "k0", true); !r.Found {
			t.Fatalf("stale read: %+v", r)
		}
	})

	t.Run("no-op session is at least once", func(t *testing.T) {
		cmd := create("noop", "1")
		if _, err := propose(e.clients[follower], &drummerpb.ProposeRequest{ShardId: kvShard, Command: cmd}); err != nil {
			t.Fatal(err)
		}
		// The same command again is applied again (no deduplication).
		r2, err := propose(e.clients[follower], &drummerpb.ProposeRequest{ShardId: kvShard, Command: cmd})
		if err != nil {
			t.Fatal(err)
		}
		if status1(t, r2) != kv.StatusMismatch {
			t.Fatalf("repeat: %v, want mismatch", status1(t, r2))
		}
	})

	t.Run("session is exactly once", func(t *testing.T) {
		s, err := openSession(e.clients[follower], kvShard)
		if err != nil {
			t.Fatal(err)
		}
		if s.GetShardId() != kvShard || s.GetClientId() == 0 || s.GetSeriesId() != 1 || s.GetRespondedTo() != 0 {
			t.Fatalf("session %v", s)
		}
		cmd := create("once", "1")
		// The same series sent to every host: applied once, same result.
		for i, cl := range e.clients {
			r, err := propose(cl, &drummerpb.ProposeRequest{ShardId: kvShard, Session: s, Command: cmd})
			if err != nil {
				t.Fatalf("host %d: %v", i, err)
			}
			if st := status1(t, r); st != kv.StatusOK {
				t.Fatalf("retry %d: status %v, want the first result (ok)", i, st)
			}
		}
		// Next series: the same command now really runs again.
		s.RespondedTo, s.SeriesId = s.SeriesId, s.SeriesId+1
		r, err := propose(e.clients[leader], &drummerpb.ProposeRequest{ShardId: kvShard, Session: s, Command: cmd})
		if err != nil {
			t.Fatal(err)
		}
		if st := status1(t, r); st != kv.StatusMismatch {
			t.Fatalf("next series: %v", st)
		}
		// Close twice: both succeed; the session is then rejected.
		for range 2 {
			if err := closeSession(e.clients[leader], s); err != nil {
				t.Fatal(err)
			}
		}
		s.RespondedTo, s.SeriesId = s.SeriesId, s.SeriesId+1
		_, err = propose(e.clients[follower], &drummerpb.ProposeRequest{ShardId: kvShard, Session: s, Command: cmd})
		wantErr(t, err, codes.FailedPrecondition, nodehostapi.ReasonSessionRejected)
	})

	t.Run("timeout then retry with the same series applies once", func(t *testing.T) {
		s, err := openSession(e.clients[leader], kvShard)
		if err != nil {
			t.Fatal(err)
		}
		// Every apply takes 1s while the first call waits 300ms. The
		// service is called directly so that its own answer (not the
		// gRPC client's deadline) is checked; "not ready" answers (a
		// leader change on a loaded machine) are retried.
		e.delay.Store(int64(time.Second))
		req := &drummerpb.ProposeRequest{ShardId: kvShard, Session: s, Command: create("slow", "1")}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_, err = e.c.Hosts[follower].Service.Propose(ctx, req)
			cancel()
			if status.Code(err) != codes.Unavailable {
				break
			}
		}
		e.delay.Store(0)
		wantErr(t, err, codes.DeadlineExceeded, nodehostapi.ReasonTimeout)
		// The retry returns the first (successful) result even though the
		// entry was applied while nobody waited.
		r, err := propose(e.clients[leader], req)
		if err != nil {
			t.Fatal(err)
		}
		if st := status1(t, r); st != kv.StatusOK {
			t.Fatalf("retry: %v", st)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		e.delay.Store(int64(time.Second))
		defer e.delay.Store(0)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			time.AfterFunc(100*time.Millisecond, cancel)
			_, err := e.c.Hosts[leader].Service.Propose(ctx, &drummerpb.ProposeRequest{ShardId: kvShard, Command: put("c", "1")})
			cancel()
			if status.Code(err) == codes.Unavailable {
				continue
			}
			wantErr(t, err, codes.Canceled, nodehostapi.ReasonCanceled)
			break
		}
	})

	t.Run("validation", func(t *testing.T) {
		cl := e.clients[follower]
		ctx := ctxT(t)
		sess, err := openSession(cl, kvShard)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.Propose(ctx, &drummerpb.ProposeRequest{ShardId: 0, Command: put("a", "b")})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonInvalidRequest)
		_, err = cl.Propose(ctx, &drummerpb.ProposeRequest{ShardId: kvShard})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonInvalidRequest)
		_, err = cl.Propose(ctx, &drummerpb.ProposeRequest{ShardId: kvShard, Command: make([]byte, maxPayload+1)})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonPayloadTooLarge)
		_, err = cl.Read(ctx, &drummerpb.ReadRequest{ShardId: kvShard, Query: make([]byte, maxPayload+1)})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonPayloadTooLarge)
		_, err = cl.Read(ctx, &drummerpb.ReadRequest{ShardId: 0})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonInvalidRequest)
		_, err = cl.OpenSession(ctx, &drummerpb.OpenSessionRequest{})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonInvalidRequest)
		_, err = cl.CloseSession(ctx, &drummerpb.CloseSessionRequest{})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonInvalidSession)
		_, err = cl.CloseSession(ctx, &drummerpb.CloseSessionRequest{Session: &drummerpb.Session{ShardId: kvShard}})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonInvalidSession)

		for name, s := range map[string]*drummerpb.Session{
			"other shard":       {ShardId: oddShard, ClientId: sess.ClientId, SeriesId: 1},
			"zero client":       {ShardId: kvShard, SeriesId: 1},
			"no-op series":      {ShardId: kvShard, ClientId: sess.ClientId},
			"register series":   {ShardId: kvShard, ClientId: sess.ClientId, SeriesId: ^uint64(0) - 1},
			"unregister series": {ShardId: kvShard, ClientId: sess.ClientId, SeriesId: ^uint64(0)},
			"responded ahead":   {ShardId: kvShard, ClientId: sess.ClientId, SeriesId: 2, RespondedTo: 5},
			"responded equal":   {ShardId: kvShard, ClientId: sess.ClientId, SeriesId: 2, RespondedTo: 2},
		} {
			_, err = cl.Propose(ctx, &drummerpb.ProposeRequest{ShardId: kvShard, Session: s, Command: put("a", "b")})
			if errInfo(err) == nil || errInfo(err).Reason != nodehostapi.ReasonInvalidSession {
				t.Fatalf("%s: %v", name, err)
			}
		}
		// A session nobody registered.
		_, err = propose(cl, &drummerpb.ProposeRequest{ShardId: kvShard, Session: &drummerpb.Session{ShardId: kvShard, ClientId: 12345, SeriesId: 1}, Command: put("a", "b")})
		wantErr(t, err, codes.FailedPrecondition, nodehostapi.ReasonSessionRejected)

		// Deadlines.
		_, err = cl.Propose(context.Background(), &drummerpb.ProposeRequest{ShardId: kvShard, Command: put("a", "b")})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonNoDeadline)
		if !strings.Contains(status.Convert(err).Message(), "set a deadline") {
			t.Fatalf("message: %v", err)
		}
		_, err = cl.Read(context.Background(), &drummerpb.ReadRequest{ShardId: kvShard, Query: getQ("a")})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonNoDeadline)
		// Shorter than the 50ms RTT. The server sees a little less than
		// what is sent, so 5ms is always too short.
		short, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err = cl.Propose(short, &drummerpb.ProposeRequest{ShardId: kvShard, Command: put("a", "b")})
		cancel()
		if status.Code(err) != codes.DeadlineExceeded { // the client's own deadline may fire first
			wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonDeadlineTooShort)
		}
		// Same thing, calling the service directly so the deadline check
		// is what answers.
		short, cancel = context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err = e.c.Hosts[0].Service.Propose(short, &drummerpb.ProposeRequest{ShardId: kvShard, Command: put("a", "b")})
		cancel()
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonDeadlineTooShort)

		// A shard this cluster does not run.
		_, err = cl.Propose(ctx, &drummerpb.ProposeRequest{ShardId: 999, Command: put("a", "b")})
		wantErr(t, err, codes.NotFound, nodehostapi.ReasonShardNotHere)
		if errInfo(err).Metadata[nodehostapi.MetaShardID] != "999" {
			t.Fatalf("metadata: %v", errInfo(err))
		}
		_, err = cl.Read(ctx, &drummerpb.ReadRequest{ShardId: 999, Query: getQ("a")})
		wantErr(t, err, codes.NotFound, nodehostapi.ReasonShardNotHere)
		_, err = cl.Read(ctx, &drummerpb.ReadRequest{ShardId: 999, Query: getQ("a"), Stale: true})
		wantErr(t, err, codes.NotFound, nodehostapi.ReasonShardNotHere)
		_, err = cl.OpenSession(ctx, &drummerpb.OpenSessionRequest{ShardId: 999})
		wantErr(t, err, codes.NotFound, nodehostapi.ReasonShardNotHere)
		_, err = cl.Propose(ctx, &drummerpb.ProposeRequest{ShardId: 999, Session: &drummerpb.Session{ShardId: 999, ClientId: 1, SeriesId: 1}, Command: put("a", "b")})
		wantErr(t, err, codes.NotFound, nodehostapi.ReasonShardNotHere)

		// Bad kv bytes are an application-level result, not an RPC error.
		r, err := propose(cl, &drummerpb.ProposeRequest{ShardId: kvShard, Command: []byte{1, 2, 3}})
		if err != nil || status1(t, r) != kv.StatusBadRequest {
			t.Fatalf("bad command: %v %v", r, err)
		}
	})

	t.Run("on-disk shard refuses sessions", func(t *testing.T) {
		cl := e.clients[follower]
		ctx := ctxT(t)
		_, err := cl.OpenSession(ctx, &drummerpb.OpenSessionRequest{ShardId: diskShard})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonSessionsUnsupported)
		_, err = cl.Propose(ctx, &drummerpb.ProposeRequest{ShardId: diskShard, Session: &drummerpb.Session{ShardId: diskShard, ClientId: 7, SeriesId: 1}, Command: []byte("x")})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonSessionsUnsupported)
		_, err = cl.CloseSession(ctx, &drummerpb.CloseSessionRequest{Session: &drummerpb.Session{ShardId: diskShard, ClientId: 7, SeriesId: 1}})
		wantErr(t, err, codes.InvalidArgument, nodehostapi.ReasonSessionsUnsupported)
		// Without a session it works.
		r, err := propose(cl, &drummerpb.ProposeRequest{ShardId: diskShard, Command: []byte("x")})
		if err != nil || r.GetValue() != 1 {
			t.Fatalf("on-disk propose: %v %v", r, err)
		}
		rr, err := readReq(cl, &drummerpb.ReadRequest{ShardId: diskShard})
		if err != nil || string(rr.GetResult()) != "1" {
			t.Fatalf("on-disk read: %v %v", rr, err)
		}
	})

	t.Run("lookup errors", func(t *testing.T) {
		cl := e.clients[leader]
		ctx := ctxT(t)
		_, err := readReq(cl, &drummerpb.ReadRequest{ShardId: oddShard, Query: []byte("err")})
		wantErr(t, err, codes.Unknown, nodehostapi.ReasonStateMachine)
		_, err = readReq(cl, &drummerpb.ReadRequest{ShardId: oddShard, Query: []byte("str")})
		wantErr(t, err, codes.Internal, nodehostapi.ReasonInternal)
		_, err = cl.Read(ctx, &drummerpb.ReadRequest{ShardId: oddShard, Query: []byte("str"), Stale: true})
		wantErr(t, err, codes.Internal, nodehostapi.ReasonInternal)
		rr, err := readReq(cl, &drummerpb.ReadRequest{ShardId: oddShard, Query: []byte("nil")})
		if err != nil || len(rr.GetResult()) != 0 {
			t.Fatalf("nil result: %v %v", rr, err)
		}
		// A Lookup that panics: recovered, reported as INTERNAL.
		_, err = cl.Read(ctx, &drummerpb.ReadRequest{ShardId: oddShard, Query: []byte("panic"), Stale: true})
		wantErr(t, err, codes.Internal, nodehostapi.ReasonInternal)
	})

	t.Run("list local shards", func(t *testing.T) {
		// Leader views can disagree for a moment (an election on a loaded
		// machine): retry until they agree on one leader.
		var last string
		for attempt := 0; attempt < 500; attempt++ {
			if last = checkLocalShards(t, e); last == "" {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal(last)
	})

	t.Run("concurrent sessions and proposals", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := e.clients[w%3]
				s, err := openSession(cl, kvShard)
				if err != nil {
					errs <- err
					return
				}
				for i := 0; i < 20; i++ {
					r, err := propose(cl, &drummerpb.ProposeRequest{ShardId: kvShard, Session: s, Command: create(fmt.Sprintf("w%d-%d", w, i), "x")})
					if err != nil {
						errs <- err
						return
					}
					if r.GetValue() != uint64(kv.StatusOK) {
						errs <- fmt.Errorf("worker %d op %d: status %d", w, i, r.GetValue())
						return
					}
					s.RespondedTo, s.SeriesId = s.SeriesId, s.SeriesId+1
				}
				if err := closeSession(cl, s); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	t.Run("replicas agree after a restart from a snapshot", func(t *testing.T) {
		// Enough writes for several snapshots (every 20 entries).
		for i := 0; i < 100; i++ {
			if _, err := propose(e.clients[leader], &drummerpb.ProposeRequest{ShardId: kvShard, Command: put(fmt.Sprint("bulk", i), fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
		before := e.recovered.Load()
		e.c.RestartHost(follower)
		if e.recovered.Load() == before {
			// The recovery runs when the replica starts; give it time.
			deadline := time.Now().Add(30 * time.Second)
			for e.recovered.Load() == before && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if e.recovered.Load() == before {
			t.Fatal("the restarted replica did not recover from a snapshot")
		}
		if _, err := propose(e.clients[follower], &drummerpb.ProposeRequest{ShardId: kvShard, Command: put("after-restart", "1")}); err != nil {
			t.Fatal(err)
		}
		// Every replica applied the same commands: equal hashes once the
		// followers catch up.
		var hashes []uint64
		deadline := time.Now().Add(30 * time.Second)
		for {
			hashes = hashes[:0]
			for i := range e.c.Hosts {
				e.read(t, i, "after-restart", false) // waits for the replica to catch up
				s, _ := e.sms.Load(uint64(i + 1))
				v, err := s.(sm.IHash).GetHash()
				if err != nil {
					t.Fatal(err)
				}
				hashes = append(hashes, v)
			}
			if hashes[0] == hashes[1] && hashes[1] == hashes[2] || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
			t.Fatalf("hashes differ: %x", hashes)
		}
		if r := e.read(t, follower, "bulk99", false); string(r.Value) != "99" {
			t.Fatalf("restarted replica: %+v", r)
		}
	})

	t.Run("closed nodehost", func(t *testing.T) {
		h := e.c.Hosts[follower]
		e.c.StopHost(follower)
		ctx := ctxT(t)
		_, err := h.Service.Propose(ctx, &drummerpb.ProposeRequest{ShardId: kvShard, Command: put("a", "b")})
		wantErr(t, err, codes.Unavailable, nodehostapi.ReasonClosed)
		_, err = h.Service.Read(ctx, &drummerpb.ReadRequest{ShardId: kvShard, Query: getQ("a"), Stale: true})
		wantErr(t, err, codes.Unavailable, nodehostapi.ReasonClosed)
		_, err = h.Service.ListLocalShards(ctx, &drummerpb.ListLocalShardsRequest{})
		wantErr(t, err, codes.Unavailable, nodehostapi.ReasonClosed)
		_, err = h.Service.OpenSession(ctx, &drummerpb.OpenSessionRequest{ShardId: 42})
		wantErr(t, err, codes.Unavailable, nodehostapi.ReasonClosed)
		// The survivors still have a quorum.
		ok := e.c.Live()[0].Index
		if _, err := propose(e.clients[ok], &drummerpb.ProposeRequest{ShardId: kvShard, Command: put("after", "1")}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("no quorum", func(t *testing.T) {
		live := e.c.Live()
		e.c.StopHost(live[0].Index)
		last := live[1].Index
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := e.clients[last].Propose(ctx, &drummerpb.ProposeRequest{ShardId: kvShard, Command: put("lost", "1")})
		// Depending on whether the last replica still believes in a
		// leader, the proposal times out or is dropped (and on a slow
		// machine the caller's deadline may fire before the answer).
		ei := errInfo(err)
		switch {
		case status.Code(err) == codes.DeadlineExceeded && (ei == nil || ei.Reason == nodehostapi.ReasonTimeout):
		case status.Code(err) == codes.Unavailable && ei != nil && ei.Reason == nodehostapi.ReasonShardNotReady:
		default:
			t.Fatalf("without quorum: %v", err)
		}
	})
}

// checkLocalShards checks ListLocalShards on every host; it returns a
// description of what is wrong, "" if nothing.
func checkLocalShards(t *testing.T, e *env) string {
	leaders := 0
	for i, cl := range e.clients {
		resp, err := cl.ListLocalShards(ctxT(t), &drummerpb.ListLocalShardsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetHostId() != e.c.Hosts[i].NH.ID() || len(resp.GetShards()) != 3 {
			t.Fatalf("host %d: %v", i, resp)
		}
		for j, s := range resp.GetShards() {
			if s.GetShardId() != uint64(j+1) || s.GetReplicaId() != uint64(i+1) || s.GetRole() != "voter" || s.GetTerm() == 0 {
				t.Fatalf("host %d shard %v", i, s)
			}
			if want := map[bool]string{true: kv.AppName, false: "other"}[s.GetShardId() == kvShard]; s.GetApp() != want {
				t.Fatalf("app %q, want %q", s.GetApp(), want)
			}
			if s.GetLeaderId() == 0 {
				return fmt.Sprintf("host %d: no leader for shard %d", i, s.GetShardId())
			}
			if s.GetShardId() == kvShard && s.GetIsLeader() {
				leaders++
			}
		}
	}
	if leaders != 1 {
		return fmt.Sprintf("%d leaders of the kv shard", leaders)
	}
	return ""
}

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

// oddSM's Lookup misbehaves on request.
type oddSM struct{}

func (oddSM) Update(e sm.Entry) (sm.Result, error) { return sm.Result{Value: 1}, nil }
func (oddSM) Lookup(q any) (any, error) {
	switch string(q.([]byte)) {
	case "err":
		return nil, errors.New("boom")
	case "str":
		return "a string", nil
	case "panic":
		panic("lookup panicked")
	}
	return nil, nil
}
func (oddSM) SaveSnapshot(io.Writer, sm.ISnapshotFileCollection, <-chan struct{}) error { return nil }
func (oddSM) RecoverFromSnapshot(io.Reader, []sm.SnapshotFile, <-chan struct{}) error   { return nil }
func (oddSM) Close() error                                                              { return nil }
