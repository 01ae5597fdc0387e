package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
	"github.com/drummerhq/drummer/internal/scheduler"
)

// fuzzState is a launched DB: hosts h1-h4 (regions r1-r3), shards 1-3 of
// 3 replicas placed on them, epoch 1.
func fuzzState(tb testing.TB) *db.State {
	st := db.New()
	apply := func(cmd *dbpb.Command) db.Result {
		cmd.Version, cmd.NowUnixMs = db.CommandVersion, 1_700_000_000_000
		return st.ApplyCommand(cmd)
	}
	decide := func(ds ...*dbpb.Decision) {
		r := apply(&dbpb.Command{Epoch: st.Epoch, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: ds}}})
		for i, c := range r.Data {
			if dbpb.Code(c) != dbpb.Code_CODE_OK {
				tb.Fatalf("fixture decision %d: %v", i, dbpb.Code(c))
			}
		}
	}
	apply(&dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: 1, DeploymentId: 7}}})
	var regs []*dbpb.Decision
	for i := 1; i <= 4; i++ {
		regs = append(regs, &dbpb.Decision{Kind: &dbpb.Decision_RegisterHost{RegisterHost: &dbpb.RegisterHost{
			HostId: fmt.Sprintf("h%d", i), RaftAddress: fmt.Sprintf("127.0.0.1:%d", 17000+i), ApiAddress: fmt.Sprintf("127.0.0.1:%d", 18000+i),
			Labels: map[string]string{planner.RegionLabel: fmt.Sprintf("r%d", (i-1)%3+1)}, Apps: []string{"kv"}}}})
	}
	decide(regs...)
	apply(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: []*dbpb.ShardSpec{
		{ShardId: 1, App: "kv", Replicas: 3}, {ShardId: 2, App: "kv", Replicas: 3}, {ShardId: 3, App: "kv", Replicas: 3}}}}})
	decide(
		&dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: 1, HostIds: []string{"h1", "h2", "h3"}}}},
		&dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: 2, HostIds: []string{"h2", "h3", "h4"}}}},
		&dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: 3, HostIds: []string{"h1", "h3", "h4"}}}})
	apply(&dbpb.Command{Op: &dbpb.Command_Launch{Launch: &dbpb.Launch{}}})
	return st
}

type reportSource struct {
	b []byte
	i int
}

func (s *reportSource) next() byte {
	if s.i >= len(s.b) {
		return 0
	}
	v := s.b[s.i]
	s.i++
	return v
}
func (s *reportSource) done() bool       { return s.i >= len(s.b) }
func (s *reportSource) n(k int) int      { return int(s.next()) % k }
func (s *reportSource) u64(k int) uint64 { return uint64(s.n(k)) }

func (s *reportSource) membership() *drummerpb.Membership {
	m := &drummerpb.Membership{ConfigChangeId: s.u64(6), Voters: map[uint64]string{}}
	for range s.n(5) {
		m.Voters[s.u64(6)] = fmt.Sprintf("127.0.0.1:%d", 17000+s.n(6))
	}
	if s.n(3) == 0 {
		m.NonVoting = map[uint64]string{s.u64(6): fmt.Sprintf("127.0.0.1:%d", 17000+s.n(6))}
	}
	return m
}

// report builds one report; most come from the registered hosts with
// their addresses, some from strangers or with wrong fields.
func (s *reportSource) report(seq map[string]uint64) *drummerpb.ReportRequest {
	h := 1 + s.n(5)
	id := fmt.Sprintf("h%d", h)
	r := &drummerpb.ReportRequest{HostId: id, RaftAddress: fmt.Sprintf("127.0.0.1:%d", 17000+h), ApiAddress: fmt.Sprintf("127.0.0.1:%d", 18000+h),
		Labels: map[string]string{planner.RegionLabel: fmt.Sprintf("r%d", (h-1)%3+1)}, Apps: []string{"kv"},
		Session: 1 + s.u64(2), Full: s.n(3) == 0, EpochSeen: s.u64(3), Starting: s.n(6) == 0}
	seq[id]++
	r.Seq = seq[id]
	if s.n(8) == 0 {
		r.Seq += s.u64(3) // a gap
	}
	switch s.n(16) {
	case 0:
		r.RaftAddress = "127.0.0.1:17001" // someone else's
	case 1:
		r.ApiAddress = r.RaftAddress
	case 2:
		r.HostId = ""
	case 3:
		r.Session = 0
	}
	for range s.n(5) {
		rr := &drummerpb.ReplicaReport{ShardId: s.u64(5), ReplicaId: s.u64(6), LeaderId: s.u64(6), Term: s.u64(4),
			ConfigChangeId: s.u64(6), Role: drummerpb.ReplicaRole(s.n(4)), Pending: s.n(6) == 0, CaughtUp: s.n(2) == 0, App: "kv"}
		if s.n(2) == 0 {
			rr.Membership = s.membership()
			for v := range rr.Membership.Voters {
				rr.Voters = append(rr.Voters, v)
			}
		}
		r.Replicas = append(r.Replicas, rr)
	}
	for range s.n(3) {
		r.Stopped = append(r.Stopped, &drummerpb.ReplicaKey{ShardId: s.u64(5), ReplicaId: s.u64(6)})
	}
	if s.n(3) == 0 {
		r.HasDiskInventory = true
		for range s.n(4) {
			r.Disk = append(r.Disk, &drummerpb.ReplicaKey{ShardId: s.u64(5), ReplicaId: s.u64(6)})
		}
	}
	for range s.n(4) {
		res := &drummerpb.OrderResult{Id: fmt.Sprintf("1/%d", s.n(8)), Outcome: drummerpb.OrderOutcome(s.n(4)),
			ShardId: s.u64(5), ReplicaId: s.u64(6)}
		if s.n(3) == 0 {
			res.Membership = s.membership()
		}
		r.Results = append(r.Results, res)
	}
	return r
}

// FuzzReportPath drives a drummer server's report path (admit, validate,
// ingest) with generated reports, and raw bytes as a report, then runs one
// planning round over everything against a launched DB. Nothing may
// panic, and the round's output must keep the simulator's invariants that
// need no ground truth: orders carry the planning epoch; at most one
// membership change per shard per round; start orders only for recorded
// members on their host; host-level orders only stop non-members; a
// scheduler that has just started declares no member of a live identity
// dead; and the decisions apply to the DB as one valid batch.
func FuzzReportPath(f *testing.F) {
	base := fuzzState(f)
	f.Add([]byte{}, false)
	f.Add([]byte{0, 0, 0, 1, 0, 0, 5, 2, 1, 1, 1, 1, 0, 1, 1, 1}, true)
	f.Add([]byte{1, 1, 0, 0, 0, 0, 2, 4, 1, 2, 3, 1, 0, 0, 2, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7}, false)
	raw, _ := proto.Marshal(report("h1", 1, 3))
	f.Add(raw, true)
	for i := range 8 {
		seed := make([]byte, 80)
		for j := range seed {
			seed[j] = byte(i*41 + j*17)
		}
		f.Add(seed, i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, data []byte, fresh bool) {
		now := time.UnixMilli(1_700_000_100_000)
		node := scheduler.New(scheduler.Config{Started: now.Add(-time.Hour)})
		var ses scheduler.Sessions
		take := func(r *drummerpb.ReportRequest) {
			n := len(r.Results)
			left := admitResults(r, scheduler.MaxReportResults)
			if left < 0 || len(r.Results)+left != n || len(r.Results) > scheduler.MaxReportResults {
				t.Fatalf("admitResults kept %d and left %d of %d", len(r.Results), left, n)
			}
			if scheduler.ValidateReport(r) != nil {
				return
			}
			node.Step(r, now, ses.Check(r))
			if !node.LastHeard(r.HostId).Equal(now) {
				t.Fatalf("host %s not heard from after a valid report", r.HostId)
			}
		}
		// The bytes as a report off the wire.
		var wire drummerpb.ReportRequest
		if proto.Unmarshal(data, &wire) == nil {
			take(&wire)
		}
		src := &reportSource{b: data}
		seq := map[string]uint64{}
		for i := 0; !src.done() && i < 8; i++ {
			take(src.report(seq))
			now = now.Add(time.Duration(src.n(4)) * time.Second)
		}
		st := base.Clone()
		node.Prune(st, now)
		in := planner.Input{Now: now, State: st, Obs: node.Observed(), ObsSince: now.Add(-time.Hour), Epoch: st.Epoch, Seed: 1, All: true}
		if fresh {
			in.ObsSince = now.Add(-time.Second)
		}
		out := planner.Plan(in)
		if testing.Verbose() {
			t.Logf("%d decisions, %d shards with orders, %d hosts with orders", len(out.Decisions), len(out.ShardOrders), len(out.HostOrders))
		}
		checkPlan(t, in, out)
		// The Node's own round over what the reports made dirty.
		if !fresh {
			node.Become(st.Epoch)
			rd := node.Round(st, db.Dirty{}, now)
			if rd.Output != nil {
				checkPlan(t, rd.Input, rd.Output)
			}
		}
	})
}

func checkPlan(t *testing.T, in planner.Input, out *planner.Output) {
	t.Helper()
	st := in.State
	for sid, orders := range out.ShardOrders {
		ncc := 0
		for _, ho := range orders {
			o := ho.Order
			if o.Epoch != in.Epoch {
				t.Fatalf("order %s carries epoch %d, planning epoch %d", o.Id, o.Epoch, in.Epoch)
			}
			switch k := o.Kind.(type) {
			case *drummerpb.Order_ConfigChange:
				ncc++
			case *drummerpb.Order_Start:
				var m *dbpb.Replica
				if sh := st.Shards.Get(sid); sh != nil {
					m = db.Member(sh, k.Start.ReplicaId)
				}
				if m == nil || m.HostId != ho.HostID || k.Start.ShardId != sid {
					t.Fatalf("start order %v on %s is not for a recorded member there", k.Start, ho.HostID)
				}
			case *drummerpb.Order_Stop:
				t.Fatalf("shard-level stop order %v", k.Stop)
			}
		}
		if ncc > 1 {
			t.Fatalf("shard %d: %d membership changes in one round", sid, ncc)
		}
	}
	for hid, orders := range out.HostOrders {
		for _, o := range orders {
			s := o.GetStop()
			if s == nil {
				t.Fatalf("host-level order %v is not a stop", o)
			}
			if sh := st.Shards.Get(s.ShardId); sh != nil {
				if m := db.Member(sh, s.ReplicaId); m != nil && m.HostId == hid {
					t.Fatalf("stop order %v on %s for a recorded member", s, hid)
				}
			}
		}
	}
	for _, d := range out.Decisions {
		r := d.GetStartRepair()
		if r == nil || r.Kind != dbpb.RepairKind_REPAIR_KIND_REPLACE {
			continue
		}
		_, dead := st.ShardTimeouts(r.ShardId)
		if in.Now.Sub(in.ObsSince) >= time.Duration(dead)*time.Millisecond {
			continue
		}
		if sh := st.Shards.Get(r.ShardId); sh != nil {
			if m := db.Member(sh, r.OldReplicaId); m != nil {
				if h := st.Hosts[m.HostId]; h != nil && h.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
					t.Fatalf("a scheduler %v old declares replica %d of shard %d dead (dead_timeout %dms)", in.Now.Sub(in.ObsSince), r.OldReplicaId, r.ShardId, dead)
				}
			}
		}
	}
	if len(out.Decisions) > 0 {
		b, err := db.Encode(&dbpb.Command{Epoch: in.Epoch, NowUnixMs: in.Now.UnixMilli(), Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: out.Decisions}}})
		if err != nil {
			t.Fatal(err)
		}
		if r := st.Clone().Apply(b); r.Code != dbpb.Code_CODE_OK {
			t.Fatalf("the round's %d decisions were refused as a batch: %v", len(out.Decisions), r.Code)
		}
	}
}
