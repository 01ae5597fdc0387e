package fleet

import (
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func testFleet(t *testing.T, hosts int) *Fleet {
	t.Helper()
	cfg := Config{Hosts: hosts, ReplicasPerHost: 1}
	cfg.Defaults()
	cfg.ElectionDelay = -1 // elect at once
	f, err := newFleet(cfg, []string{"127.0.0.1:1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	f.model.electionDelay = 0
	return f
}

func do(t *testing.T, h *Host, o *drummerpb.Order) *drummerpb.OrderResult {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	o.Epoch = 1
	return h.execute(1, o, true)
}

func start(shard, replica uint64, join, nonVoting bool, members map[uint64]string) *drummerpb.Order {
	return &drummerpb.Order{Id: "s", Kind: &drummerpb.Order_Start{Start: &drummerpb.StartReplicaOrder{
		ShardId: shard, ReplicaId: replica, App: appName, Join: join, NonVoting: nonVoting, InitialMembers: members}}}
}

func cc(shard uint64, typ drummerpb.ConfigChangeType, replica uint64, target string, ccid uint64) *drummerpb.Order {
	return &drummerpb.Order{Id: "c", Kind: &drummerpb.Order_ConfigChange{ConfigChange: &drummerpb.ConfigChangeOrder{
		ShardId: shard, Type: typ, ReplicaId: replica, Target: target, ConfigChangeId: ccid}}}
}

// TestRepairDance walks one shard through the scheduler's repair steps on
// the model: bootstrap, leader on quorum, add non-voting, join, catch up,
// promote, remove; stale ConfigChangeIDs are rejected and the removed
// replica stops itself.
func TestRepairDance(t *testing.T) {
	f := testFleet(t, 4)
	h := f.hosts
	members := map[uint64]string{1: h[0].raft, 2: h[1].raft, 3: h[2].raft}
	now := time.Now()
	if r := do(t, h[0], start(7, 1, false, false, members)); r.Outcome != outDone {
		t.Fatal(r)
	}
	if v := h[0].currentView(now); v.Replicas[7].LeaderId != 0 || v.Replicas[7].ConfigChangeId == 0 {
		t.Fatalf("one of three voters: no leader yet, a non-zero ConfigChangeID: %v", v.Replicas[7])
	}
	do(t, h[1], start(7, 2, false, false, members))
	g := f.model.group(7, false)
	if g.leader == 0 {
		t.Fatal("two of three voters run: a leader")
	}
	do(t, h[2], start(7, 3, false, false, members))
	ccid := g.ccid
	if r := do(t, h[0], cc(7, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING, 4, h[3].raft, ccid+5)); r.Outcome != outRejected {
		t.Fatalf("stale ConfigChangeID: %v", r)
	}
	if r := do(t, h[0], cc(7, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_ADD_NON_VOTING, 4, h[3].raft, ccid)); r.Outcome != outDone || r.Membership.NonVoting[4] != h[3].raft {
		t.Fatal(r)
	}
	do(t, h[3], start(7, 4, true, true, nil))
	if rr := h[3].currentView(now).Replicas[7]; !rr.CaughtUp || rr.Pending || rr.Role != drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING {
		t.Fatalf("joined non-voting replica: %v", rr)
	}
	// The leader's view carries the new membership.
	leaderHost := h[g.leader-1]
	if ms := leaderHost.currentView(now).Memberships[7]; ms == nil || ms.ConfigChangeId != g.ccid {
		t.Fatalf("leader's membership: %v", ms)
	}
	if r := do(t, h[1], cc(7, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_PROMOTE, 4, h[3].raft, g.ccid)); r.Outcome != outDone {
		t.Fatal(r)
	}
	if r := do(t, h[2], cc(7, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE, 1, "", g.ccid)); r.Outcome != outDone {
		t.Fatal(r)
	}
	if v := h[0].currentView(now); v.Replicas[7] != nil {
		t.Fatal("the removed replica stops itself")
	}
	if r := do(t, h[0], &drummerpb.Order{Id: "x", Kind: &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{ShardId: 7, ReplicaId: 1, RemoveData: true}}}); r.Outcome != outDone {
		t.Fatal(r)
	}
	if _, n := f.model.violationList(); n != 0 {
		t.Fatal(f.model.violationList())
	}
	// Removing a member's data is a violation.
	do(t, h[1], &drummerpb.Order{Id: "y", Kind: &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{ShardId: 7, ReplicaId: 2}}})
	do(t, h[1], &drummerpb.Order{Id: "z", Kind: &drummerpb.Order_Stop{Stop: &drummerpb.StopReplicaOrder{ShardId: 7, ReplicaId: 2, RemoveData: true}}})
	if _, n := f.model.violationList(); n != 1 {
		t.Fatal("data loss not seen")
	}
	// Two of three voters gone: no leader.
	h[2].crash()
	if g.leader != 0 {
		t.Fatalf("leader %d without quorum", g.leader)
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	p50, p99 := h.quantile(0.5), h.quantile(0.99)
	if p50 < 480*time.Millisecond || p50 > 501*time.Millisecond || p99 < 955*time.Millisecond || p99 > 991*time.Millisecond {
		t.Fatalf("p50 %s p99 %s", p50, p99)
	}
	if h.max.Load() != 1_000_000 {
		t.Fatal(h.max.Load())
	}
	for us := uint64(0); us < 1<<20; us += 997 {
		if v := bucketValue(bucketOf(us)); v > us || float64(us-v) > 0.04*float64(us)+1 {
			t.Fatalf("%d µs in bucket from %d", us, v)
		}
	}
}

// Only running hosts are killed: the join scenario's hosts, not started
// yet, would never be declared dead.
func TestVictimsAreRunningHosts(t *testing.T) {
	f := testFleet(t, 10)
	for i := range 4 {
		f.hosts[i].cancel = func() {}
	}
	killed := map[string]bool{f.hosts[0].ID(): true}
	for range 50 {
		v := f.victims(killed, 10)
		if len(v) != 3 {
			t.Fatalf("victims %v: want hosts 1, 2 and 3", v)
		}
		for _, i := range v {
			if i < 1 || i > 3 {
				t.Fatalf("victim %d: not started or already killed", i)
			}
		}
	}
}
