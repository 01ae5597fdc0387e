package planner

import (
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"google.golang.org/protobuf/proto"
)

// dropsOrRemoves lists the decisions of out that remove or forget a member.
func dropsOrRemoves(out *Output) []*dbpb.Decision {
	var ds []*dbpb.Decision
	for _, d := range out.Decisions {
		if r := d.GetStartRepair(); r != nil && r.Kind == dbpb.RepairKind_REPAIR_KIND_REMOVE {
			ds = append(ds, d)
		}
		if d.GetFinishRepair() != nil || d.GetAddCleanup() != nil {
			ds = append(ds, d)
		}
	}
	return ds
}

// The attack of issue 10: a host with a valid certificate reports, for its
// own replica of a healthy shard, a membership with a high ConfigChangeID
// that lists the other (healthy) voters as removed. The claim cannot be
// confirmed by anyone else, so nothing is removed or deleted and the shard
// stays healthy; the explanation says why the claim is ignored.
func TestForgedMembershipClaimIsIgnored(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	for _, forged := range []*drummerpb.Membership{
		{ConfigChangeId: 1000, Voters: map[uint64]string{1: f.addr["a"]}, Removed: []uint64{2, 3}},
		{ConfigChangeId: 1000, Voters: map[uint64]string{1: f.addr["a"], 2: f.addr["b"], 77: "10.9.9.9:1"}, Removed: []uint64{3}},
		{ConfigChangeId: 10, Voters: map[uint64]string{1: f.addr["a"], 2: f.addr["b"]}, Removed: []uint64{3}},
		{ConfigChangeId: 11, Voters: map[uint64]string{1: f.addr["a"], 2: f.addr["b"]}},
		{ConfigChangeId: 1 << 60, Voters: map[uint64]string{4: "x:1", 5: "y:1"}, Removed: []uint64{1, 2, 3}},
	} {
		// The forger also lies about its own replica.
		f.obs.Hosts["a"].Replicas[1] = &drummerpb.ReplicaReport{ShardId: 1, ReplicaId: 1, LeaderId: 1, Term: 99,
			ConfigChangeId: forged.ConfigChangeId, Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER, Membership: forged}
		f.obs.AddClaim(1, "a", 1, forged)
		// A host that holds no member claims the same.
		f.obs.AddClaim(1, "d", 9, forged)
		for range 5 {
			out := f.round()
			if ds := dropsOrRemoves(out); len(ds) != 0 {
				t.Fatalf("forged claim %v led to %v: %s", forged, ds, explanation(out, 1))
			}
			if got := out.Shards[1].Health; got != "healthy" {
				t.Fatalf("forged claim %v: shard is %s: %s", forged, got, explanation(out, 1))
			}
			wantContains(t, "explanation", explanation(out, 1), "ignoring the membership claimed by replica 1")
			f.advance(time.Second, "a", "b", "c", "d")
		}
		if n := len(f.st.Shards.Get(1).Members); n != 3 || len(f.st.CleanupsFor("b"))+len(f.st.CleanupsFor("c")) != 0 {
			t.Fatalf("members %v, cleanups on b/c", f.st.Shards.Get(1).Members)
		}
	}
}

// Claims of hosts that hold no member of the shard are never believed,
// even consistent ones.
func TestClaimsFromStrangersAreIgnored(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.obs.Claims[1] = map[string]*HostClaims{}
	ms := &drummerpb.Membership{ConfigChangeId: 10, Voters: map[uint64]string{1: f.addr["a"], 2: f.addr["b"]}, Removed: []uint64{3}}
	f.obs.AddClaim(1, "d", 0, ms)
	out := f.round()
	if ds := dropsOrRemoves(out); len(ds) != 0 {
		t.Fatalf("a stranger's claim led to %v", ds)
	}
	wantContains(t, "explanation", explanation(out, 1), "hold no member of the shard")
}

// A genuine removal is believed once a quorum of the remaining voters, on
// two hosts, report they applied it; before that it is not.
func TestRemovalNeedsCorroboration(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		f.host(id, "r1")
	}
	f.shard(1, "a", "b", "c")
	f.obs.Claims[1] = map[string]*HostClaims{}
	ms := &drummerpb.Membership{ConfigChangeId: 11, Voters: map[uint64]string{1: f.addr["a"], 2: f.addr["b"]}, Removed: []uint64{3}}
	f.obs.AddClaim(1, "a", 1, ms)
	f.obs.Hosts["a"].Replicas[1].ConfigChangeId = 11
	out := f.plan()
	if ds := dropsOrRemoves(out); len(ds) != 0 {
		t.Fatalf("uncorroborated removal led to %v: %s", ds, explanation(out, 1))
	}
	wantContains(t, "explanation", explanation(out, 1), "drops recorded replicas [3]")
	f.obs.Hosts["b"].Replicas[1].ConfigChangeId = 11
	f.obs.Hosts["b"].Replicas[1].Voters = []uint64{1, 2}
	out = f.plan()
	if rs := startRepairs(out); len(rs) != 1 || rs[0].Kind != dbpb.RepairKind_REPAIR_KIND_REMOVE || rs[0].OldReplicaId != 3 {
		t.Fatalf("corroborated removal: %v: %s", rs, explanation(out, 1))
	}
	// A member that still counts the removed replica as a voter at a later
	// ConfigChangeID contradicts the claim.
	f.obs.Hosts["b"].Replicas[1].ConfigChangeId = 12
	f.obs.Hosts["b"].Replicas[1].Voters = []uint64{1, 2, 3}
	out = f.plan()
	if ds := dropsOrRemoves(out); len(ds) != 0 {
		t.Fatalf("contradicted removal led to %v", ds)
	}
}

// A one-replica shard moving off a draining host has voters on two hosts
// only between the promotion and the removal of the old voter, and the
// removal is then confirmed by the new replica's host alone. The old
// replica's own host carries out the removal, and a claim that drops it is
// believed only once that host reported doing so: the new host alone can
// never make the planner forget the shard's only voter (and delete its
// data).
func TestOneReplicaMoveNeedsTheOldHostsWord(t *testing.T) {
	f := newFixture(t)
	f.host("a", "r1")
	f.host("b", "r1")
	f.shard(1, "a")
	f.admin("a", dbpb.HostAdmin_HOST_ADMIN_DRAINING)
	r := f.repairTo(dbpb.RepairKind_REPAIR_KIND_MOVE, "b", 1, dbpb.RepairStep_REPAIR_STEP_REMOVE_OLD)
	n := r.NewReplicaId
	f.membership(1, 20, map[uint64]string{1: f.addr["a"], n: f.addr["b"]}, nil)
	f.run(1, 1, "a", 1, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)
	f.run(1, n, "b", 1, drummerpb.ReplicaRole_REPLICA_ROLE_VOTER)

	// The removal is ordered from the old replica's host, a, although
	// replica 1 leads (no leadership transfer first).
	out := f.round()
	cs := ccOrders(out, 1)
	if len(cs) != 1 || cs[0].Type != drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE || cs[0].ReplicaId != 1 {
		t.Fatalf("orders %v, want the removal of replica 1: %s", cs, explanation(out, 1))
	}
	var from string
	for _, ho := range out.ShardOrders[1] {
		if ho.Order.GetConfigChange() != nil {
			from = ho.HostID
		}
	}
	if from != "a" {
		t.Fatalf("removal of replica 1 ordered from %q, want a (its own host)", from)
	}

	// b alone claims the removal; a's replica is gone (stopped, or never
	// told): not believed, nothing dropped.
	gone := &drummerpb.Membership{ConfigChangeId: 21, Voters: map[uint64]string{n: f.addr["b"]}, Removed: []uint64{1}}
	f.obs.AddClaim(1, "b", n, gone)
	f.obs.Hosts["b"].Replicas[1].ConfigChangeId = 21
	f.obs.Hosts["b"].Replicas[1].Voters = []uint64{n}
	f.stop("a", 1)
	for range 3 {
		out = f.round()
		if ds := dropsOrRemoves(out); len(ds) != 0 {
			t.Fatalf("b's word alone dropped replica 1: %v: %s", ds, explanation(out, 1))
		}
		f.advance(time.Second, "a", "b")
	}
	wantContains(t, "explanation", explanation(out, 1), "only that replica's host")
	if sh := f.st.Shards.Get(1); db.Member(sh, 1) == nil {
		t.Fatal("replica 1's record was dropped")
	}

	// a reports its removal order done: the move finishes.
	oid := ccOrderID(1, 1, drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE, 1, 20)
	f.obs.Hosts["a"].Results = map[string]*drummerpb.OrderResult{oid: {Id: oid, ShardId: 1, ReplicaId: 1, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE}}
	out = f.round()
	done := false
	for _, d := range out.Decisions {
		if fr := d.GetFinishRepair(); fr != nil && fr.Outcome == dbpb.RepairOutcome_REPAIR_OUTCOME_DONE {
			done = true
		}
	}
	if !done {
		t.Fatalf("move not finished after a reported the removal: decisions %v: %s", kinds(out), explanation(out, 1))
	}
}

func TestEqualMembershipIsProtoEqual(t *testing.T) {
	base := func() *drummerpb.Membership {
		return &drummerpb.Membership{ConfigChangeId: 7, Voters: map[uint64]string{1: "a:1", 2: "b:2"}, NonVoting: map[uint64]string{3: "c:3"}, Removed: []uint64{9}}
	}
	variants := []func(*drummerpb.Membership){
		func(m *drummerpb.Membership) {},
		func(m *drummerpb.Membership) { m.ConfigChangeId = 8 },
		func(m *drummerpb.Membership) { m.Voters[2] = "b:3" },
		func(m *drummerpb.Membership) { delete(m.Voters, 2) },
		func(m *drummerpb.Membership) { m.NonVoting = nil },
		func(m *drummerpb.Membership) { m.Witnesses = map[uint64]string{4: "d:4"} },
		func(m *drummerpb.Membership) { m.Removed = nil },
		func(m *drummerpb.Membership) { m.Removed = []uint64{9, 10} },
	}
	for i, v := range variants {
		m := base()
		v(m)
		if got, want := EqualMembership(base(), m), proto.Equal(base(), m); got != want {
			t.Errorf("variant %d: EqualMembership %v, proto.Equal %v", i, got, want)
		}
	}
}
