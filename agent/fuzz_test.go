package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/drummerhq/drummer/agent/nodehostapi/nhtest"
	"github.com/drummerhq/drummer/api/drummerpb"
)

// orderSource turns fuzz input into orders over a tiny ID space, where
// starts, stops and membership changes collide.
type orderSource struct {
	b []byte
	i int
}

func (s *orderSource) next() byte {
	if s.i >= len(s.b) {
		return 0
	}
	v := s.b[s.i]
	s.i++
	return v
}
func (s *orderSource) done() bool  { return s.i >= len(s.b) }
func (s *orderSource) n(k int) int { return int(s.next()) % k }

// malformed says why the generator made an order that must be refused
// before dragonboat sees it ("" when it is well formed).
func (s *orderSource) order(self string, epoch uint64, seq int) (*drummerpb.Order, string) {
	shard, replica := uint64(s.n(4)), uint64(s.n(4))
	o := &drummerpb.Order{Id: fmt.Sprintf("%d/%d", epoch, seq), Epoch: epoch}
	why := ""
	if shard == 0 || replica == 0 {
		why = "zero ids"
	}
	other := []string{"127.0.0.1:1", self, "nohost", ""}[s.n(4)]
	switch s.n(4) {
	case 0:
		st := &drummerpb.StartReplicaOrder{ShardId: shard, ReplicaId: replica, App: []string{"kv", "kv", "nosuch"}[s.n(3)],
			Config: &drummerpb.ShardConfig{ElectionRtt: 10, HeartbeatRtt: 1, CheckQuorum: s.n(2) == 0}}
		if st.App != "kv" && why == "" {
			why = "unknown app"
		}
		switch s.n(4) {
		case 0:
			st.Join = true
		case 1:
			st.InitialMembers = map[uint64]string{replica: self}
		case 2:
			st.InitialMembers = map[uint64]string{replica: self, replica%3 + 1: other}
		case 3:
			st.Join, st.InitialMembers = true, map[uint64]string{replica: self}
		}
		if s.n(8) == 0 {
			st.Config = &drummerpb.ShardConfig{ElectionRtt: uint64(s.n(3)), HeartbeatRtt: uint64(s.n(3))}
		}
		o.Kind = &drummerpb.Order_Start{Start: st}
	case 1:
		o.Kind = &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{ShardId: shard, ReplicaId: replica, RemoveData: s.n(4) == 0}}
	case 2:
		cc := &drummerpb.ConfigChangeOrder{ShardId: shard, ReplicaId: replica, Type: drummerpb.ConfigChangeType(s.n(5)),
			Target: other, ConfigChangeId: uint64(s.n(4))}
		o.Kind = &drummerpb.Order_ConfigChange{ConfigChange: cc}
	default:
		o.Kind = &drummerpb.Order_TransferLeader{TransferLeader: &drummerpb.TransferLeaderOrder{ShardId: shard, ToReplicaId: replica}}
	}
	return o, why
}

// FuzzOrderExecutor drives the order executor of an agent on a real
// NodeHost with generated orders and replies. Oracles: execution never
// panics and always ends in DONE, FAILED or REJECTED; malformed orders are
// refused and change nothing in dragonboat; a deposed epoch's orders are
// never queued; a start that is DONE leaves the replica running and
// assigned, a stop that is DONE leaves it stopped and unassigned; and the
// data of a replica that is a member of its shard is never removed.
func FuzzOrderExecutor(f *testing.F) {
	// Fuzz workers' output is discarded: with DRUMMER_FUZZ_CRASH_DIR set,
	// a crash of a worker (a panic in a dragonboat goroutine, say) is
	// written there.
	if dir := os.Getenv("DRUMMER_FUZZ_CRASH_DIR"); dir != "" {
		if out, err := os.Create(filepath.Join(dir, fmt.Sprintf("crash-%d.txt", os.Getpid()))); err == nil {
			defer out.Close()
			_ = debug.SetCrashOutput(out, debug.CrashOptions{})
		}
	}
	c := nhtest.New(f, nhtest.Options{Hosts: 1, RTTMillisecond: 5})
	h := c.Hosts[0]
	st, err := loadStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	a := &Agent{cfg: Config{Apps: DefaultRegistry(), RaftAddress: h.RaftAddr}, log: slog.New(slog.DiscardHandler), store: st, nh: h.NH}
	a.col = newCollector(a)
	// One NodeHost serves every input, as one serves an agent for its
	// lifetime: the addresses given to it are remembered across inputs.
	addrs := map[replicaKey]string{}
	stopped := map[replicaKey]time.Time{}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0})
	f.Add([]byte{0, 0, 2, 2, 0, 0, 1, 1, 0, 0, 1, 2, 2, 0, 0, 0, 0, 0, 2, 2, 1, 0, 0})
	f.Add([]byte{1, 0, 3, 1, 2, 0, 2, 2, 1, 3, 0, 0, 3, 3, 3, 2, 2, 1, 0, 0, 1, 1})
	// start 1/1 alone; stop it with its data (refused: a member); stop
	// it; remove its data; start it again.
	f.Add([]byte{1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1})
	for i := range 6 {
		seed := make([]byte, 48)
		for j := range seed {
			seed[j] = byte(i*29 + j*13)
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e := newExecutor(a)
		e.addrs, e.stopped = addrs, stopped
		// Short enough that an input stays well under the fuzzer's
		// 10-second hang limit (orders on shards with no quorum wait
		// for these).
		e.timeouts = execTimeouts{configChange: 200 * time.Millisecond, membership: 200 * time.Millisecond, removeData: 2 * time.Second}
		src := &orderSource{b: data}
		epoch := e.epochSeen()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := 0; !src.done() && i < 8; i++ {
			if src.n(4) == 0 {
				// A reply: of this epoch, a newer one, or a deposed one.
				re := epoch + uint64(src.n(3))
				if epoch > 0 && src.n(2) == 0 {
					re = epoch - 1
				}
				o, _ := src.order(h.RaftAddr, re, i)
				queued := len(e.queue)
				seen := e.epochSeen()
				e.submit(re, []*drummerpb.Order{o})
				if re < seen && len(e.queue) != queued {
					t.Fatalf("an order of deposed epoch %d was queued (epoch %d seen)", re, seen)
				}
				if e.epochSeen() < seen {
					t.Fatal("the epoch seen went down")
				}
				epoch = max(epoch, re)
				for len(e.queue) > 0 { // drop queued orders: executed below
					<-e.queue
				}
				continue
			}
			o, why := src.order(h.RaftAddr, epoch, i)
			before := shardsOn(a)
			stop := o.GetStop()
			member := stop.GetRemoveData() && isMemberHere(a, stop.ShardId, stop.ReplicaId)
			res := e.execute(ctx, o)
			if member && res.Outcome == drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
				t.Fatalf("removed the data of replica %d, a member of shard %d", stop.ReplicaId, stop.ShardId)
			}
			switch res.Outcome {
			case drummerpb.OrderOutcome_ORDER_OUTCOME_DONE, drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED, drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED:
			default:
				t.Fatalf("order %v: outcome %v", o, res.Outcome)
			}
			if strings.HasPrefix(res.Error, "panic") {
				t.Fatalf("order %v: %s", o, res.Error)
			}
			if why != "" {
				if res.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED {
					t.Fatalf("malformed order (%s) %v: %v %s", why, o, res.Outcome, res.Error)
				}
				if after := shardsOn(a); after != before {
					t.Fatalf("refused order (%s) changed the replicas: %s -> %s", why, before, after)
				}
			}
			checkEffect(t, a, o, res)
			if testing.Verbose() {
				t.Logf("%v: %v %s", o.Kind, res.Outcome, res.Error)
			}
		}
	})
}

var nhInfoOpts = dragonboat.NodeHostInfoOption{SkipLogInfo: true}

// isMemberHere reports whether the replica runs here and its shard's
// membership (as the shard answers now) lists it.
func isMemberHere(a *Agent, shard, replica uint64) bool {
	if id, ok := running(a, shard); !ok || id != replica {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	m, err := a.nh.SyncGetShardMembership(ctx, shard)
	return err == nil && isMember(m, replica)
}

// shardsOn lists the replicas running on the agent's NodeHost.
func shardsOn(a *Agent) string {
	info := a.nh.GetNodeHostInfo(nhInfoOpts)
	var b strings.Builder
	for _, si := range info.ShardInfoList {
		fmt.Fprintf(&b, "%d/%d ", si.ShardID, si.ReplicaID)
	}
	return b.String()
}

func running(a *Agent, shard uint64) (uint64, bool) {
	for _, si := range a.nh.GetNodeHostInfo(nhInfoOpts).ShardInfoList {
		if si.ShardID == shard {
			return si.ReplicaID, true
		}
	}
	return 0, false
}

func checkEffect(t *testing.T, a *Agent, o *drummerpb.Order, res *drummerpb.OrderResult) {
	t.Helper()
	if res.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_DONE {
		return
	}
	switch k := o.Kind.(type) {
	case *drummerpb.Order_Start:
		if id, ok := running(a, k.Start.ShardId); !ok || id != k.Start.ReplicaId {
			t.Fatalf("start %v DONE but running %d (%v)", k.Start, id, ok)
		}
		if as := a.store.assignment(k.Start.ShardId); as == nil || as.ReplicaId != k.Start.ReplicaId {
			t.Fatalf("start %v DONE but not assigned", k.Start)
		}
	case *drummerpb.Order_Stop:
		if id, ok := running(a, k.Stop.ShardId); ok && id == k.Stop.ReplicaId {
			t.Fatalf("stop %v DONE but still running", k.Stop)
		}
		if as := a.store.assignment(k.Stop.ShardId); as != nil && as.ReplicaId == k.Stop.ReplicaId {
			t.Fatalf("stop %v DONE but still assigned", k.Stop)
		}
	}
}
