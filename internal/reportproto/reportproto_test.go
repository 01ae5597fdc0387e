package reportproto

import (
	"slices"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
)

var id = &Identity{HostID: "h1", RaftAddress: "127.0.0.1:7000", APIAddress: "127.0.0.1:7001", Apps: []string{"kv"}, Session: 7}

func rep(shard, replica, leader uint64) *drummerpb.ReplicaReport {
	return &drummerpb.ReplicaReport{ShardId: shard, ReplicaId: replica, LeaderId: leader, Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER}
}

func view(rs ...*drummerpb.ReplicaReport) *View {
	v := &View{Replicas: map[uint64]*drummerpb.ReplicaReport{}, Memberships: map[uint64]*drummerpb.Membership{}}
	for _, r := range rs {
		v.Replicas[r.ShardId] = r
	}
	return v
}

func shards(req *drummerpb.ReportRequest) []uint64 {
	var out []uint64
	for _, r := range req.Replicas {
		out = append(out, r.ShardId)
	}
	return out
}

func TestFullThenDeltas(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEndpoint()
	v1 := view(rep(1, 1, 1), rep(2, 4, 0), rep(3, 7, 8))
	r := e.Build(id, v1, Status{EpochSeen: 3}, nil, 30*time.Second, now)
	if !r.Req.Full || r.Req.Seq != 1 || !slices.Equal(shards(r.Req), []uint64{1, 2, 3}) || r.Req.EpochSeen != 3 || r.Req.HostId != "h1" || r.Req.Session != 7 {
		t.Fatalf("first report: %v", r.Req)
	}
	e.Acked(r, &drummerpb.ReportResponse{}, now)

	// Same view: nothing to say but the heartbeat.
	r = e.Build(id, v1, Status{}, nil, 30*time.Second, now.Add(time.Second))
	if r.Req.Full || r.Req.Seq != 2 || len(r.Req.Replicas) != 0 || len(r.Req.Stopped) != 0 {
		t.Fatalf("unchanged: %v", r.Req)
	}
	e.Acked(r, &drummerpb.ReportResponse{}, now.Add(time.Second))

	// Shard 2 learns its leader, shard 3 stops, shard 4 starts; shard 1 is
	// an equal message in a new view.
	v2 := view(rep(1, 1, 1), rep(2, 4, 5), rep(4, 9, 0))
	r = e.Build(id, v2, Status{}, nil, 30*time.Second, now.Add(2*time.Second))
	if r.Req.Full || !slices.Equal(shards(r.Req), []uint64{2, 4}) || len(r.Req.Stopped) != 1 || r.Req.Stopped[0].ShardId != 3 || r.Req.Stopped[0].ReplicaId != 7 {
		t.Fatalf("delta: %v", r.Req)
	}
	// Not acknowledged: the next one is full.
	e.Failed(r, now.Add(2*time.Second))
	r = e.Build(id, v2, Status{}, nil, 30*time.Second, now.Add(3*time.Second))
	if !r.Req.Full || r.Req.Seq != 3 || len(r.Req.Replicas) != 3 {
		t.Fatalf("after a failure: %v", r.Req)
	}
	e.Acked(r, &drummerpb.ReportResponse{NeedFull: true}, now.Add(3*time.Second))
	r = e.Build(id, v2, Status{}, nil, 30*time.Second, now.Add(4*time.Second))
	if !r.Req.Full || r.Req.Seq != 4 {
		t.Fatalf("server asked for a full report: %v", r.Req)
	}
	e.Acked(r, &drummerpb.ReportResponse{}, now.Add(4*time.Second))
	r = e.Build(id, v2, Status{}, nil, 30*time.Second, now.Add(34*time.Second))
	if !r.Req.Full {
		t.Fatalf("full reports come every 30s: %v", r.Req)
	}
}

func TestMembershipsDiskAndResults(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEndpoint()
	v1 := view(rep(1, 1, 1))
	v1.Memberships[1] = &drummerpb.Membership{ConfigChangeId: 5, Voters: map[uint64]string{1: "a"}}
	v1.Disk, v1.DiskVersion = []*drummerpb.ReplicaKey{{ShardId: 1, ReplicaId: 1}}, 1
	var log []*drummerpb.OrderResult
	results := func(seq uint64) ([]*drummerpb.OrderResult, uint64) { return log[seq:], uint64(len(log)) }
	log = append(log, &drummerpb.OrderResult{Id: "a"})
	r := e.Build(id, v1, Status{}, results, time.Minute, now)
	if r.Req.Replicas[0].Membership == nil || v1.Replicas[1].Membership != nil {
		t.Fatal("the membership goes with the leader's replica, on a copy")
	}
	if !r.Req.HasDiskInventory || len(r.Req.Disk) != 1 || len(r.Req.Results) != 1 {
		t.Fatalf("first report: %v", r.Req)
	}
	e.Acked(r, &drummerpb.ReportResponse{}, now)

	log = append(log, &drummerpb.OrderResult{Id: "b"})
	v2 := view(rep(1, 1, 1))
	v2.Memberships[1] = &drummerpb.Membership{ConfigChangeId: 5, Voters: map[uint64]string{1: "a"}}
	v2.Disk, v2.DiskVersion = v1.Disk, 1
	r = e.Build(id, v2, Status{}, results, time.Minute, now)
	if len(r.Req.Replicas) != 0 || r.Req.HasDiskInventory || len(r.Req.Results) != 1 || r.Req.Results[0].Id != "b" {
		t.Fatalf("known membership and inventory, one new result: %v", r.Req)
	}
	e.Acked(r, &drummerpb.ReportResponse{}, now)

	v3 := view(rep(1, 1, 1))
	v3.Memberships[1] = &drummerpb.Membership{ConfigChangeId: 6, Voters: map[uint64]string{1: "a", 2: "b"}}
	v3.Disk, v3.DiskVersion = v1.Disk, 2
	r = e.Build(id, v3, Status{}, results, time.Minute, now)
	if len(r.Req.Replicas) != 1 || r.Req.Replicas[0].Membership.ConfigChangeId != 6 || !r.Req.HasDiskInventory || len(r.Req.Results) != 0 {
		t.Fatalf("newer membership and inventory: %v", r.Req)
	}
}

func TestIntervalFastOnlyToTheLeader(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEndpoint()
	ch := make(chan struct{})
	if e.Interval(5*time.Second, true) != FollowerFactor*5*time.Second || e.Nudge(ch) != nil {
		t.Fatal("a server not known as the leader does not get the follower cadence")
	}
	v := &View{Replicas: map[uint64]*drummerpb.ReplicaReport{}}
	id := &Identity{HostID: "h", Session: 1}
	e.Acked(e.Build(id, v, Status{}, nil, time.Minute, now), &drummerpb.ReportResponse{Leader: true}, now)
	if e.Interval(5*time.Second, false) != 5*time.Second || e.Interval(5*time.Second, true) != FastInterval ||
		e.Interval(100*time.Millisecond, true) != 100*time.Millisecond || e.Nudge(ch) == nil {
		t.Fatal("leader cadence")
	}
	// A slow leader is asked less often.
	r := e.Build(id, v, Status{}, nil, time.Minute, now)
	e.Acked(r, &drummerpb.ReportResponse{Leader: true}, now.Add(500*time.Millisecond))
	if got := e.Interval(5*time.Second, true); got != 2*time.Second {
		t.Fatalf("interval after a 500ms report: %v, want 2s", got)
	}
	e.Failed(e.Build(id, v, Status{}, nil, time.Minute, now), now)
	if e.Interval(5*time.Second, true) != FollowerFactor*5*time.Second || e.Nudge(ch) != nil {
		t.Fatal("a failing server keeps the leader's cadence")
	}
	if Timeout(100*time.Millisecond) != 2*time.Second || Timeout(5*time.Second) != 10*time.Second {
		t.Fatal("Timeout")
	}
}

func TestResultsLeftForTheNextReport(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEndpoint()
	log := []*drummerpb.OrderResult{{Id: "a"}, {Id: "b"}, {Id: "c"}}
	results := func(seq uint64) ([]*drummerpb.OrderResult, uint64) { return log[seq:], uint64(len(log)) }
	v := view(rep(1, 1, 1))
	r := e.Build(id, v, Status{}, results, time.Minute, now)
	e.Acked(r, &drummerpb.ReportResponse{ResultsLeft: 2}, now)
	r = e.Build(id, v, Status{}, results, time.Minute, now)
	if len(r.Req.Results) != 2 || r.Req.Results[0].Id != "b" {
		t.Fatalf("the results the server left come again: %v", r.Req.Results)
	}
}

func TestExpectedOrdersGetTheFastCadence(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEndpoint()
	v := &View{Replicas: map[uint64]*drummerpb.ReplicaReport{}}
	id := &Identity{HostID: "h", Session: 1}
	// A follower cannot ask for it.
	e.Acked(e.Build(id, v, Status{}, nil, time.Minute, now), &drummerpb.ReportResponse{ExpectOrders: true}, now)
	if e.Interval(5*time.Second, false) != FollowerFactor*5*time.Second {
		t.Fatal("a follower's expect_orders changed its cadence")
	}
	e.Acked(e.Build(id, v, Status{}, nil, time.Minute, now), &drummerpb.ReportResponse{Leader: true, ExpectOrders: true}, now)
	if e.Interval(5*time.Second, false) != FastInterval {
		t.Fatal("the leader's expect_orders did not make the cadence fast")
	}
	e.Acked(e.Build(id, v, Status{}, nil, time.Minute, now), &drummerpb.ReportResponse{Leader: true}, now)
	if e.Interval(5*time.Second, false) != 5*time.Second {
		t.Fatal("the fast cadence outlived expect_orders")
	}
}

func TestHeldOrdersUntilTheLeaderChangesThem(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEndpoint()
	v := view(rep(1, 1, 1))
	orders := []*drummerpb.Order{{Id: "o1", Epoch: 5}}
	step := func(resp *drummerpb.ReportResponse) *drummerpb.ReportRequest {
		t.Helper()
		now = now.Add(time.Second)
		r := e.Build(id, v, Status{}, nil, 30*time.Second, now)
		e.Acked(r, resp, now)
		return r.Req
	}
	// Nothing held yet: the report names no orders.
	if req := step(&drummerpb.ReportResponse{Leader: true, Epoch: 5, OrdersVersion: 9, Orders: orders}); req.OrdersEpoch != 0 || req.OrdersVersion != 0 {
		t.Fatalf("first report names orders: %v", req)
	}
	if len(e.Orders()) != 1 {
		t.Fatalf("orders not held: %v", e.Orders())
	}
	// The next report names them; unchanged keeps them.
	req := step(&drummerpb.ReportResponse{Leader: true, Epoch: 5, OrdersVersion: 9, OrdersUnchanged: true})
	if req.OrdersEpoch != 5 || req.OrdersVersion != 9 || len(e.Orders()) != 1 {
		t.Fatalf("unchanged: req %v, held %v", req, e.Orders())
	}
	// Unchanged about another version than the one asked about: drop
	// them, so the next report asks for the list.
	step(&drummerpb.ReportResponse{Leader: true, Epoch: 5, OrdersVersion: 10, OrdersUnchanged: true})
	if e.Orders() != nil {
		t.Fatalf("mismatched unchanged kept %v", e.Orders())
	}
	if req := step(&drummerpb.ReportResponse{Leader: true, Epoch: 5, OrdersVersion: 10, Orders: orders}); req.OrdersVersion != 0 {
		t.Fatalf("dropped orders still named: %v", req)
	}
	// A new list replaces the held one; an empty one clears it.
	step(&drummerpb.ReportResponse{Leader: true, Epoch: 5, OrdersVersion: 11, Orders: []*drummerpb.Order{{Id: "o2", Epoch: 5}, {Id: "o3", Epoch: 5}}})
	if len(e.Orders()) != 2 {
		t.Fatalf("replaced list: %v", e.Orders())
	}
	if req := step(&drummerpb.ReportResponse{Leader: true, Epoch: 5}); req.OrdersVersion != 11 || e.Orders() != nil {
		t.Fatalf("cleared list: req %v, held %v", req, e.Orders())
	}
	// A follower's reply or a failure forgets them: orders come only from
	// a leader, and a new one sends its own.
	step(&drummerpb.ReportResponse{Leader: true, Epoch: 5, OrdersVersion: 12, Orders: orders})
	step(&drummerpb.ReportResponse{Epoch: 5})
	if e.Orders() != nil {
		t.Fatal("a follower's reply kept the orders")
	}
	step(&drummerpb.ReportResponse{Leader: true, Epoch: 5, OrdersVersion: 12, Orders: orders})
	e.Failed(e.Build(id, v, Status{}, nil, 30*time.Second, now), now)
	if r := e.Build(id, v, Status{}, nil, 30*time.Second, now); e.Orders() != nil || r.Req.OrdersVersion != 0 {
		t.Fatalf("a failure kept the orders: %v", r.Req)
	}
}

// The period runs from send to send: a slow reply shortens the pause
// after it, down to half a period, so a server hears from a live host at
// least every Timeout plus half a period, whatever the latency.
func TestPauseKeepsTheSendToSendPeriod(t *testing.T) {
	now := time.Unix(1000, 0)
	base := 5 * time.Second
	e := NewEndpoint()
	v := view(rep(1, 1, 1))
	for _, c := range []struct {
		took time.Duration
		fail bool
		want time.Duration
	}{
		{10 * time.Millisecond, false, base - 10*time.Millisecond},
		{2 * time.Second, false, 3 * time.Second},
		{4 * time.Second, false, base / 2},
		{Timeout(base), true, base / 2},
		{0, true, base},
	} {
		r := e.Build(id, v, Status{}, nil, time.Minute, now)
		now = now.Add(c.took)
		if c.fail {
			e.Failed(r, now)
		} else {
			e.Acked(r, &drummerpb.ReportResponse{}, now)
		}
		if got := e.Pause(base); got != c.want {
			t.Errorf("after a report that took %v (failed %v): pause %v, want %v", c.took, c.fail, got, c.want)
		}
		if gap := c.took + e.Pause(base); gap > Timeout(base)+base/2 {
			t.Errorf("send-to-send gap %v exceeds the timeout plus half a period", gap)
		}
	}
}
