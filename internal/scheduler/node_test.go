package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// fixture drives a Node like the server's loop does, against a DB built
// by real commands; the hosts' reports are written by the test.
type fixture struct {
	t    *testing.T
	st   *db.State
	n    *Node
	ses  Sessions
	now  time.Time
	seq  map[string]uint64
	runs map[string]map[uint64]*drummerpb.ReplicaReport
	// starting sets ReportRequest.starting in a host's reports.
	starting map[string]bool
}

func newFixture(t *testing.T, cfg Config) *fixture {
	return newFixtureLaunched(t, cfg, true)
}

func newFixtureLaunched(t *testing.T, cfg Config, launch bool) *fixture {
	f := &fixture{t: t, st: db.New(), now: t0, seq: map[string]uint64{}, runs: map[string]map[uint64]*drummerpb.ReplicaReport{}}
	f.cmd(&dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: 1, DeploymentId: 1}}})
	f.cmd(&dbpb.Command{Op: &dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: db.DefaultConfig()}}})
	if launch {
		f.cmd(&dbpb.Command{Op: &dbpb.Command_Launch{Launch: &dbpb.Launch{}}})
	}
	cfg.Started = t0
	f.n = New(cfg)
	f.n.Become(f.st.Epoch)
	return f
}

func (f *fixture) cmd(c *dbpb.Command) db.Result {
	f.t.Helper()
	c.Version = db.CommandVersion
	c.NowUnixMs = f.now.UnixMilli()
	r := f.st.ApplyCommand(c)
	if r.Code != dbpb.Code_CODE_OK {
		f.t.Fatalf("command %v: %v", c.Op, r.Code)
	}
	return r
}

// report sends a full report from host (running what f.runs says).
func (f *fixture) report(host string) {
	f.seq[host]++
	var i int
	fmt.Sscanf(host, "h%d", &i)
	r := &drummerpb.ReportRequest{HostId: host, RaftAddress: fmt.Sprintf("10.0.0.1:%d", 7000+i), ApiAddress: fmt.Sprintf("10.0.1.1:%d", 7000+i),
		Labels: map[string]string{}, Apps: []string{"kv"}, Session: 1, Seq: f.seq[host], Full: true, Starting: f.starting[host]}
	for _, rr := range f.runs[host] {
		r.Replicas = append(r.Replicas, rr)
	}
	if err := ValidateReport(r); err != nil {
		f.t.Fatal(err)
	}
	f.n.Step(r, f.now, f.ses.Check(r))
}

// round runs a round and applies its decisions.
func (f *fixture) round() Ready {
	f.t.Helper()
	rd := f.n.Round(f.st, f.st.TakeDirty(), f.now)
	if len(rd.Decisions) > 0 {
		f.cmd(&dbpb.Command{Epoch: rd.Epoch, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: rd.Decisions}}})
	}
	return rd
}

func hostName(i int) string { return fmt.Sprintf("h%03d", i) }

// registerHosts has hosts 0 to n-1 report and runs the round that
// registers them.
func (f *fixture) registerHosts(n int) {
	f.t.Helper()
	for i := range n {
		f.report(hostName(i))
	}
	f.round()
}

func TestHostsRegisterAndShardsArePlaced(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	f.registerHosts(3)
	if len(f.st.Hosts) != 3 {
		t.Fatalf("%d hosts registered, want 3", len(f.st.Hosts))
	}
	f.cmd(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{
		Shards: []*dbpb.ShardSpec{{ShardId: 1, App: "kv", Replicas: 3}}}}})
	f.round() // places
	rd := f.round()
	sh := f.st.Shards.Get(1)
	if len(sh.Members) != 3 {
		t.Fatalf("shard 1 has %d members, want 3", len(sh.Members))
	}
	if len(rd.OrderHosts) != 3 {
		t.Fatalf("orders changed on %v, want the 3 hosts", rd.OrderHosts)
	}
	for i := range 3 {
		if o := f.n.OrdersFor(hostName(i)); len(o) != 1 || o[0].GetStart() == nil {
			t.Fatalf("host %d orders %v, want one start", i, o)
		}
	}
	// The same orders stay in force; a round that changes nothing
	// publishes nothing.
	if rd := f.round(); len(rd.OrderHosts) != 0 {
		t.Fatalf("unchanged round republished orders for %v", rd.OrderHosts)
	}
}

// A report that repeats the previous one plans nothing: only what changed
// is dirty.
func TestUnchangedReportsPlanNothing(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	f.registerHosts(3)
	f.cmd(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{
		Shards: []*dbpb.ShardSpec{{ShardId: 1, App: "kv", Replicas: 3}}}}})
	f.round()
	sh := f.st.Shards.Get(1)
	for _, m := range sh.Members {
		if f.runs[m.HostId] == nil {
			f.runs[m.HostId] = map[uint64]*drummerpb.ReplicaReport{}
		}
		f.runs[m.HostId][1] = &drummerpb.ReplicaReport{ShardId: 1, ReplicaId: m.ReplicaId, LeaderId: sh.Members[0].ReplicaId, Term: 1,
			Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER, App: "kv", ConfigChangeId: 1}
	}
	for range 3 {
		f.now = f.now.Add(time.Second)
		for i := range 3 {
			f.report(hostName(i))
		}
		f.round()
	}
	f.now = f.now.Add(time.Second)
	for i := range 3 {
		f.report(hostName(i))
	}
	f.n.lastRep = f.now // no repair cadence in this round
	if rd := f.round(); rd.PlannedShards != 0 {
		t.Fatalf("a round after unchanged reports planned %d shards (%v)", rd.PlannedShards, rd.Input.Shards)
	}
}

// A silent host turns suspect and dead on its timer, without any round
// reading every host, and its shards are planned at each transition.
func TestLivenessTimers(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	for i := range 4 {
		f.report(hostName(i))
	}
	f.round()
	f.cmd(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{
		Shards: []*dbpb.ShardSpec{{ShardId: 1, App: "kv", Replicas: 3}}}}})
	f.round()
	victim := f.st.Shards.Get(1).Members[0].HostId
	suspect := time.Duration(f.st.Config.SuspectTimeoutMs) * time.Millisecond
	dead := time.Duration(f.st.Config.DeadTimeoutMs) * time.Millisecond
	var saw []string
	for elapsed := time.Duration(0); elapsed <= dead+time.Second; elapsed += 200 * time.Millisecond {
		f.now = f.now.Add(200 * time.Millisecond)
		if elapsed%time.Second == 0 {
			for i := range 4 {
				if hostName(i) != victim {
					f.report(hostName(i))
				}
			}
		}
		f.n.lastRep = f.now
		rd := f.round()
		if slices.Contains(rd.Input.Hosts, victim) {
			l, _ := f.n.HostLiveness(victim)
			saw = append(saw, l.String())
			if !slices.Contains(rd.Input.Shards, 1) {
				t.Fatalf("host %s turned %s but its shard was not planned", victim, l)
			}
		}
	}
	if !slices.Contains(saw, "suspect") || !slices.Contains(saw, "dead") {
		t.Fatalf("transitions seen %v, want suspect then dead (suspect %s, dead %s)", saw, suspect, dead)
	}
	if c := f.n.HostCounts(); c["dead"] != 1 || c["up"] != 3 {
		t.Fatalf("host counts %v, want 3 up and 1 dead", c)
	}
	// The host comes back: up at once.
	f.report(victim)
	f.round()
	if l, _ := f.n.HostLiveness(victim); l != planner.Up {
		t.Fatalf("host back but judged %s", l)
	}
}

// The fast first pass after Become covers the shards the new leader found,
// not those defined later (their DB marks plan them): a leader elected
// before a 333,334-shard fleet was defined patrolled all of it at half a
// round's capacity during the launch.
func TestFirstPassCoversTheShardsFoundAtBecome(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: 100, Tick: 200 * time.Millisecond, Sweep: time.Second, MaxShardsPerRound: 400})
	next := func() Ready {
		f.now = f.now.Add(200 * time.Millisecond)
		return f.round()
	}
	next() // no shards: nothing to patrol
	f.create(1, 1000)
	next()
	if !f.n.patrol.warm {
		t.Fatal("shards defined after Become extended the first pass")
	}
	// A new leader finds 1,000 shards: its first pass visits them at
	// half a round (200 a round) until it has seen them all.
	f.n.Demote()
	f.n.Become(f.st.Epoch)
	for i := range 5 {
		if f.n.patrol.warm {
			t.Fatalf("first pass over after %d rounds of 200 of 1,000 shards", i)
		}
		if rd := next(); rd.PlannedShards < 200 {
			t.Fatalf("round %d of the first pass planned %d shards, want at least 200", i, rd.PlannedShards)
		}
	}
	if !f.n.patrol.warm {
		t.Fatal("first pass not over after 1,000 shards")
	}
}

// When a host is done starting replicas (or comes back from silence), the
// shards it should run are planned at once: a replica it did not start is
// no longer "starting" there, and may need replacing. Those are the DB's
// members on the host, not the replicas it runs (whose verdicts the flag
// does not change).
func TestHostDoneStartingPlansItsShards(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	f.starting = map[string]bool{}
	f.registerHosts(3)
	f.create(1, 1)
	f.round() // places
	f.round() // start orders
	sh := f.st.Shards.Get(1)
	lagging := sh.Members[2].HostId
	f.starting[lagging] = true
	for _, m := range sh.Members[:2] {
		f.runs[m.HostId] = map[uint64]*drummerpb.ReplicaReport{1: {ShardId: 1, ReplicaId: m.ReplicaId, LeaderId: sh.Members[0].ReplicaId,
			Term: 2, Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER, App: "kv"}}
		f.report(m.HostId)
	}
	f.report(lagging)
	for range 3 {
		f.now = f.now.Add(time.Second)
		f.round()
	}
	f.now = f.now.Add(time.Second)
	f.starting[lagging] = false
	f.report(lagging)
	if rd := f.round(); !slices.Contains(rd.Input.Shards, 1) {
		t.Fatalf("host %s done starting without replica %d: shard 1 not planned (planned %v)", lagging, sh.Members[2].ReplicaId, rd.Input.Shards)
	}
}

// The patrol visits at most PatrolPerSecond shards per second, and every
// shard within a pass.
func TestPatrolIsBounded(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: 100, Tick: 200 * time.Millisecond, Sweep: time.Second})
	var specs []*dbpb.ShardSpec
	for id := uint64(1); id <= 1000; id++ {
		specs = append(specs, &dbpb.ShardSpec{ShardId: id, App: "kv", Replicas: 3})
	}
	f.cmd(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: specs}}})
	f.round() // the new shards are dirty (no hosts: nothing placed)
	// The first pass after Become is fast (a new leader learns every
	// verdict within seconds); then the rate applies.
	f.now = f.now.Add(200 * time.Millisecond)
	f.round()
	if c := f.n.Counts(); c["pending"] != 1000 {
		t.Fatalf("after the first pass the verdicts are %v, want 1000 judged pending", c)
	}
	seen := map[uint64]bool{}
	for i := range 60 { // 12 s of rounds
		f.now = f.now.Add(200 * time.Millisecond)
		f.n.lastRep = f.now
		rd := f.round()
		if rd.PlannedShards > 21 {
			t.Fatalf("round %d patrolled %d shards, want at most 21 (100/s)", i, rd.PlannedShards)
		}
		for _, id := range rd.Input.Shards {
			seen[id] = true
		}
	}
	if len(seen) < 1000 {
		// 12 s at 100/s covers 1,200 shards: one whole pass.
		t.Fatalf("patrol visited %d of 1000 shards in 12 s", len(seen))
	}
}

func TestVerdictCountsAndPages(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	var specs []*dbpb.ShardSpec
	for id := uint64(1); id <= 10; id++ {
		specs = append(specs, &dbpb.ShardSpec{ShardId: id, App: "kv", Replicas: 3})
	}
	f.cmd(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: specs}}})
	f.round()
	if c := f.n.Counts(); c["pending"] != 10 {
		t.Fatalf("counts %v, want 10 pending", c)
	}
	ids, next, total := f.n.ShardPage(0, 4, nil)
	if !slices.Equal(ids, []uint64{1, 2, 3, 4}) || next != 5 || total != 10 {
		t.Fatalf("page 1: %v next %d total %d", ids, next, total)
	}
	ids, next, _ = f.n.ShardPage(9, 4, nil)
	if !slices.Equal(ids, []uint64{9, 10}) || next != 0 {
		t.Fatalf("last page: %v next %d", ids, next)
	}
	if ids, _, total := f.n.ShardPage(0, 100, map[string]bool{"healthy": true}); len(ids) != 0 || total != 0 {
		t.Fatalf("healthy filter: %v total %d", ids, total)
	}
	if ids, _, total := f.n.ShardPage(0, 100, map[string]bool{"pending": true}); len(ids) != 10 || total != 10 {
		t.Fatalf("pending filter: %v total %d", ids, total)
	}
	// Deleting shards drops their verdicts.
	f.cmd(&dbpb.Command{Op: &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{1, 2}}}})
	f.round()
	if c := f.n.Counts(); c["pending"] != 8 || f.n.NumShards() != 8 {
		t.Fatalf("after delete: counts %v, %d shards", c, f.n.NumShards())
	}
}

func TestValidateReport(t *testing.T) {
	ok := &drummerpb.ReportRequest{HostId: "h1", RaftAddress: "10.0.0.1:7100", ApiAddress: "10.0.0.1:7200", Session: 1, Seq: 1, Full: true}
	if err := ValidateReport(ok); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(r *drummerpb.ReportRequest){
		"no session":       func(r *drummerpb.ReportRequest) { r.Session = 0 },
		"zero replica id":  func(r *drummerpb.ReportRequest) { r.Replicas = []*drummerpb.ReplicaReport{{ShardId: 1}} },
		"nil replica":      func(r *drummerpb.ReportRequest) { r.Replicas = []*drummerpb.ReplicaReport{nil} },
		"zero disk key":    func(r *drummerpb.ReportRequest) { r.Disk = []*drummerpb.ReplicaKey{{}} },
		"nil stopped key":  func(r *drummerpb.ReportRequest) { r.Stopped = []*drummerpb.ReplicaKey{nil} },
		"empty result id":  func(r *drummerpb.ReportRequest) { r.Results = []*drummerpb.OrderResult{{}} },
		"no host id":       func(r *drummerpb.ReportRequest) { r.HostId = "" },
		"bad raft address": func(r *drummerpb.ReportRequest) { r.RaftAddress = "nowhere" },
	} {
		r := &drummerpb.ReportRequest{HostId: ok.HostId, RaftAddress: ok.RaftAddress, ApiAddress: ok.ApiAddress, Session: 1, Seq: 1, Full: true}
		mod(r)
		if err := ValidateReport(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSessions(t *testing.T) {
	var s Sessions
	r := func(ses, seq uint64, full bool) *drummerpb.ReportRequest {
		return &drummerpb.ReportRequest{HostId: "h", Session: ses, Seq: seq, Full: full}
	}
	if s.Check(r(1, 5, false)) {
		t.Fatal("a delta from an unknown session is in sequence")
	}
	s.Check(r(1, 1, true))
	if !s.Check(r(1, 2, false)) {
		t.Fatal("the next delta is not in sequence")
	}
	if s.Check(r(1, 4, false)) {
		t.Fatal("a gap is in sequence")
	}
	if s.Check(r(2, 3, false)) {
		t.Fatal("another session is in sequence")
	}
	s.Forget("h")
	if s.Check(r(1, 3, false)) {
		t.Fatal("a forgotten host is in sequence")
	}
}

// A node that does not lead keeps no dirty sets, and its driver's Prune
// bounds what reports leave behind (order results, hosts that went away).
func TestFollowerPrunes(t *testing.T) {
	n := New(Config{Started: t0})
	st := db.New()
	r := &drummerpb.ReportRequest{HostId: "h1", RaftAddress: "10.0.0.1:7001", ApiAddress: "10.0.1.1:7001", Session: 1, Seq: 1, Full: true,
		Replicas: []*drummerpb.ReplicaReport{{ShardId: 1, ReplicaId: 1}},
		Results:  []*drummerpb.OrderResult{{Id: "o1", ShardId: 1, Outcome: drummerpb.OrderOutcome_ORDER_OUTCOME_DONE}}}
	n.Step(r, t0, true)
	if len(n.dirtyS) != 0 || len(n.dirtyH) != 0 {
		t.Fatalf("a follower keeps dirty sets: %d shards, %d hosts", len(n.dirtyS), len(n.dirtyH))
	}
	if len(n.Observed().Hosts["h1"].Results) != 1 {
		t.Fatal("result not observed")
	}
	later := t0.Add(planner.ResultTTL + time.Second)
	if !n.PruneDue(later) {
		t.Fatal("prune not due")
	}
	n.Prune(st, later)
	if len(n.Observed().Hosts["h1"].Results) != 0 {
		t.Fatal("an old result survived the prune")
	}
	if f := n.TakeForgotten(); len(f) != 0 {
		t.Fatalf("forgot %v too early", f)
	}
	n.Prune(st, t0.Add(planner.UnregisteredTTL+time.Second))
	if f := n.TakeForgotten(); !slices.Equal(f, []string{"h1"}) {
		t.Fatalf("forgotten %v, want [h1]", f)
	}
}

func TestAttentionFollowsRepairsInFlight(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	for i := range 4 {
		f.report(hostName(i))
	}
	f.round()
	f.cmd(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{
		Shards: []*dbpb.ShardSpec{{ShardId: 1, App: "kv", Replicas: 3}}}}})
	f.round()
	if a, _ := f.n.Attention(); len(a) != 0 {
		t.Fatalf("attention %v without repairs", a)
	}
	sh := f.st.Shards.Get(1)
	var spare string
	for i := range 4 {
		if !slices.ContainsFunc(sh.Members, func(m *dbpb.Replica) bool { return m.HostId == hostName(i) }) {
			spare = hostName(i)
		}
	}
	f.cmd(&dbpb.Command{Epoch: f.st.Epoch, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: []*dbpb.Decision{
		{Kind: &dbpb.Decision_StartRepair{StartRepair: &dbpb.StartRepair{ShardId: 1, Kind: dbpb.RepairKind_REPAIR_KIND_ADD, NewHostId: spare}}}}}}})
	f.now = f.now.Add(2 * time.Second)
	f.round()
	a, changed := f.n.Attention()
	if !changed || len(a) != 4 {
		t.Fatalf("attention %v (changed %v), want the 3 members' hosts and the new one", a, changed)
	}
	if _, changed := f.n.Attention(); changed {
		t.Fatal("Attention says changed twice")
	}
}

// Decisions the DB did not apply, or a proposal that was lost, send their
// shards and hosts back to be planned: nothing changed in the DB for them.
func TestSettleRequeuesUnappliedDecisions(t *testing.T) {
	n := New(Config{Started: time.Unix(0, 0)})
	ds := []*dbpb.Decision{
		{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: 7, HostIds: []string{"a", "b", "c"}}}},
		{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: 8, HostIds: []string{"a", "b", "c"}}}},
		{Kind: &dbpb.Decision_AddCleanup{AddCleanup: &dbpb.AddCleanup{HostId: "h", ShardId: 9, ReplicaId: 1}}},
	}
	codes := []byte{byte(dbpb.Code_CODE_OK), byte(dbpb.Code_CODE_CONFLICT), byte(dbpb.Code_CODE_NOT_FOUND)}
	if got := n.Settle(ds, codes, false); got != 2 {
		t.Fatalf("Settle = %d not applied, want 2", got)
	}
	if _, ok := n.dirtyS[7]; ok {
		t.Error("an applied decision's shard was queued again")
	}
	for _, id := range []uint64{8, 9} {
		if _, ok := n.dirtyS[id]; !ok {
			t.Errorf("shard %d of an unapplied decision is not queued again", id)
		}
	}
	if _, ok := n.dirtyH["h"]; !ok {
		t.Error("host of an unapplied decision is not queued again")
	}
	clear(n.dirtyS)
	if got := n.Settle(ds, nil, true); got != 3 || len(n.dirtyS) != 3 {
		t.Errorf("lost proposal: Settle = %d, queued %v; want all 3", got, n.dirtyS)
	}
}

// Shards awaiting their initial placement are planned before the backlog,
// whether they changed or the patrol found them: a round full of placed
// shards to re-plan (their hosts reporting them starting) does not hold
// the placement of the others back.
func TestUnplacedShardsArePlacedFirst(t *testing.T) {
	f := newFixture(t, Config{MaxShardsPerRound: 10, Limits: planner.Limits{MaxPlacements: 5, MaxNewRepairs: 256, MaxCleanups: 1024, MaxOrdersPerHost: 256}})
	f.registerHosts(3)
	f.create(1, 40)
	for range 8 {
		f.round()
	}
	placed := 0
	for _, sh := range f.st.Shards.All() {
		if len(sh.Members) > 0 {
			placed++
		}
	}
	if placed != 40 {
		t.Fatalf("%d of 40 shards placed after 8 rounds of 5 placements", placed)
	}
	// Every placed shard is dirty again (its hosts report it), and 20 new
	// shards come: each round still places its 5.
	for sid := range f.st.Shards.IDs() {
		f.n.dirtyS[sid] = struct{}{}
	}
	f.create(41, 20)
	for i := range 4 {
		f.round()
		n := 0
		for sid := uint64(41); sid <= 60; sid++ {
			if len(f.st.Shards.Get(sid).Members) > 0 {
				n++
			}
		}
		if want := 5 * (i + 1); n != want {
			t.Fatalf("round %d: %d new shards placed, want %d (placement waits behind the backlog)", i+1, n, want)
		}
	}
}

// Shards defined before the launch (which marks everything changed) and
// shards a new leader finds unplaced come to the placement queue at once,
// not at the patrol's rate: at 333,334 shards the launch placed 300 a
// second, as fast as the patrol visited them.
func TestLaunchQueuesEveryShardForPlacement(t *testing.T) {
	cfg := Config{PatrolPerSecond: 1, MaxShardsPerRound: 400, Limits: planner.Limits{MaxPlacements: 300, MaxNewRepairs: 256, MaxCleanups: 1024, MaxOrdersPerHost: 256}}
	f := newFixtureLaunched(t, cfg, false)
	f.registerHosts(3)
	f.create(1, 1000)
	f.round()
	f.cmd(&dbpb.Command{Op: &dbpb.Command_Launch{Launch: &dbpb.Launch{}}})
	f.round() // the patrol's first pass takes 200 of them (half a round)
	f.round()
	placed := func() int {
		n := 0
		for _, sh := range f.st.Shards.All() {
			if len(sh.Members) > 0 {
				n++
			}
		}
		return n
	}
	if n := placed(); n != 600 {
		t.Fatalf("%d of 1,000 shards placed after two rounds of 300 placements", n)
	}
	// A new leader finds the other 400 unplaced.
	f.n.Demote()
	f.n.Become(f.st.Epoch)
	f.round()
	f.round()
	if n := placed(); n != 1000 {
		t.Fatalf("%d of 1,000 shards placed after a new leader's two rounds", n)
	}
}

// create defines count shards of 3 kv replicas from ID first.
func (f *fixture) create(first uint64, count int) {
	var specs []*dbpb.ShardSpec
	for i := range count {
		specs = append(specs, &dbpb.ShardSpec{ShardId: first + uint64(i), App: "kv", Replicas: 3})
	}
	f.cmd(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: specs}}})
}

// The per-shard part of Prune (O(everything observed)) runs only when the
// DB dropped shards or member records since the last one, or
// FullPruneEvery passed: a fleet that only adds replicas never pays for it.
func TestPruneScansShardsOnlyAfterDrops(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	f.create(1, 2)
	f.n.obs.Memberships[99] = &drummerpb.Membership{ConfigChangeId: 1} // a shard the DB never had
	f.n.Prune(f.st, f.now)                                             // the first prune is full
	if _, ok := f.n.obs.Memberships[99]; ok {
		t.Fatal("the first prune kept the membership of a shard the DB does not have")
	}
	f.n.obs.Memberships[99] = &drummerpb.Membership{ConfigChangeId: 1}
	f.n.Prune(f.st, f.now.Add(10*time.Second))
	if _, ok := f.n.obs.Memberships[99]; !ok {
		t.Fatal("a prune without drops in the DB scanned the shards")
	}
	// Deleting a shard moves the DB's mark: the next prune is full.
	f.n.obs.Memberships[2] = &drummerpb.Membership{ConfigChangeId: 1}
	f.cmd(&dbpb.Command{Op: &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{2}}}})
	f.n.Prune(f.st, f.now.Add(20*time.Second))
	for _, id := range []uint64{2, 99} {
		if _, ok := f.n.obs.Memberships[id]; ok {
			t.Errorf("after a deletion, the prune kept the membership of shard %d", id)
		}
	}
	// Without drops, FullPruneEvery still bounds what is kept.
	f.n.obs.Memberships[99] = &drummerpb.Membership{ConfigChangeId: 1}
	f.n.Prune(f.st, f.now.Add(20*time.Second+FullPruneEvery))
	if _, ok := f.n.obs.Memberships[99]; ok {
		t.Error("FullPruneEvery passed and the membership of a missing shard is kept")
	}
}

// An order result re-sent by its host (until a report of it is answered)
// keeps the time it first arrived: the planner's start timeouts count from
// there.
func TestResultsKeepTheirFirstArrival(t *testing.T) {
	n := New(Config{Started: t0})
	n.Become(1)
	rep := func(seq uint64, out drummerpb.OrderOutcome) *drummerpb.ReportRequest {
		r := fullReport(seq)
		r.Results = []*drummerpb.OrderResult{{Id: "s-1", ShardId: 1, ReplicaId: 1, Outcome: out}}
		return r
	}
	n.Step(rep(1, drummerpb.OrderOutcome_ORDER_OUTCOME_DONE), t0, true)
	n.Step(rep(2, drummerpb.OrderOutcome_ORDER_OUTCOME_DONE), t0.Add(time.Minute), true)
	if got := n.input(db.New(), t0).ResultAt["h1"]["s-1"]; !got.Equal(t0) {
		t.Fatalf("re-sent result arrived at %v, want its first arrival %v", got, t0)
	}
	n.Step(rep(3, drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED), t0.Add(2*time.Minute), true)
	if got := n.input(db.New(), t0).ResultAt["h1"]["s-1"]; !got.Equal(t0.Add(2 * time.Minute)) {
		t.Fatalf("changed result arrived at %v, want %v", got, t0.Add(2*time.Minute))
	}
}

// A new leader credits the reports it took as a follower with the longer
// follower cadence (reportproto.FollowerFactor): a host whose last report
// to it is one follower period old is still up, a long-silent one is not.
func TestNewLeaderCreditsFollowerReports(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	for i := range 3 {
		f.report(hostName(i))
	}
	f.round()
	f.n.Demote()
	suspect := time.Duration(f.st.Config.SuspectTimeoutMs) * time.Millisecond
	f.now = f.now.Add(50 * time.Second)
	f.report(hostName(0))
	f.report(hostName(1))
	f.now = f.now.Add(suspect - 500*time.Millisecond)
	f.report(hostName(1))
	f.now = f.now.Add(time.Second) // h000: silent for suspect+0.5s, as a follower hears it
	f.n.Become(f.st.Epoch)
	f.round()
	for h, want := range map[string]planner.Liveness{hostName(0): planner.Up, hostName(1): planner.Up, hostName(2): planner.Dead} {
		if l, _ := f.n.HostLiveness(h); l != want {
			t.Errorf("%s judged %s after the failover, want %s", h, l, want)
		}
	}
}

// An arrival the driver only noted (Heard) keeps a host alive like a
// report taken, and a queued report taken later does not move the host's
// last report back.
func TestHeardArrivalsKeepHostsUp(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	f.registerHosts(2)
	suspect := time.Duration(f.st.Config.SuspectTimeoutMs) * time.Millisecond
	queuedAt := f.now
	for elapsed := time.Duration(0); elapsed < 2*suspect; elapsed += time.Second {
		f.now = f.now.Add(time.Second)
		f.report(hostName(0))
		f.n.Heard(hostName(1), f.now)
		f.round()
	}
	for i := range 2 {
		if l, _ := f.n.HostLiveness(hostName(i)); l != planner.Up {
			t.Fatalf("%s judged %s", hostName(i), l)
		}
	}
	f.n.Heard("unknown", f.now)
	if f.n.Observed().Hosts["unknown"] != nil {
		t.Fatal("Heard made up a host")
	}
	// The report behind the last noted arrival is taken late.
	f.seq[hostName(1)]++
	f.n.Step(&drummerpb.ReportRequest{HostId: hostName(1), RaftAddress: "10.0.0.1:7001", ApiAddress: "10.0.1.1:7001",
		Labels: map[string]string{}, Apps: []string{"kv"}, Session: 1, Seq: f.seq[hostName(1)], Full: true}, queuedAt, true)
	if got := f.n.LastHeard(hostName(1)); !got.Equal(f.now) {
		t.Fatalf("last heard %v after a late report, want %v", got, f.now)
	}
}

// A starting shard's progress marks (each replica's first report, its
// membership, the first leader it sees) are taken in one evaluation when
// its settle window ends, not one evaluation each; a replica that stops is
// planned at once.
func TestStartingShardProgressIsCoalesced(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: -1})
	f.registerHosts(3)
	f.create(1, 1)
	f.round() // places
	f.round() // start orders
	sh := f.st.Shards.Get(1)
	if len(sh.Members) != 3 || sh.Bootstrapped {
		t.Fatalf("shard 1: %d members, bootstrapped %v; want 3 members starting", len(sh.Members), sh.Bootstrapped)
	}
	window := settleWindow(f.st.Config.ReportIntervalMs)
	planned := func(rd Ready) bool { return slices.Contains(rd.Input.Shards, 1) }
	start := f.now
	for i, m := range sh.Members {
		f.now = start.Add(time.Duration(i) * window / 4)
		f.runs[m.HostId] = map[uint64]*drummerpb.ReplicaReport{1: {ShardId: 1, ReplicaId: m.ReplicaId, Pending: true,
			Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER, App: "kv"}}
		f.report(m.HostId)
		if rd := f.round(); planned(rd) {
			t.Fatalf("report %d of a starting shard planned it at once", i+1)
		}
	}
	f.now = start.Add(window)
	if rd := f.round(); !planned(rd) {
		t.Fatalf("shard 1 not planned when its settle window ended (planned %v)", rd.Input.Shards)
	}
	if rd := f.round(); planned(rd) {
		t.Fatal("shard 1 planned again with nothing new")
	}
	// A replica that stops is no progress: planned in the next round.
	f.now = f.now.Add(100 * time.Millisecond)
	delete(f.runs[sh.Members[0].HostId], 1)
	f.report(sh.Members[0].HostId)
	if rd := f.round(); !planned(rd) {
		t.Fatal("a starting shard whose replica stopped was not planned at once")
	}
	// The first leader a replica sees bootstraps the shard: planned at once.
	f.now = f.now.Add(100 * time.Millisecond)
	m := sh.Members[1]
	f.runs[m.HostId][1] = &drummerpb.ReplicaReport{ShardId: 1, ReplicaId: m.ReplicaId, LeaderId: m.ReplicaId, Term: 2,
		Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER, App: "kv"}
	f.report(m.HostId)
	if rd := f.round(); !planned(rd) {
		t.Fatal("a starting shard's first leader was held back")
	}
	// Once bootstrapped, progress is planned at once.
	if !f.st.Shards.Get(1).Bootstrapped {
		t.Fatal("shard 1 not bootstrapped after its replica saw a leader")
	}
	f.now = f.now.Add(100 * time.Millisecond)
	f.runs[m.HostId][1] = &drummerpb.ReplicaReport{ShardId: 1, ReplicaId: m.ReplicaId, LeaderId: m.ReplicaId, Term: 3,
		Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER, App: "kv"}
	f.report(m.HostId)
	if rd := f.round(); !planned(rd) {
		t.Fatal("progress of a bootstrapped shard was held back")
	}
}

// A shard released from the settle window and held again waits for its new
// window: its older FIFO entry does not release it early.
func TestSettleHeldAgainWaitsForItsNewWindow(t *testing.T) {
	var s settle
	s.reset()
	s.hold(1, t0.Add(2*time.Second))
	s.release(1) // planned anyway
	s.hold(1, t0.Add(3*time.Second))
	out := map[uint64]struct{}{}
	s.due(t0.Add(2*time.Second), out)
	if len(out) != 0 {
		t.Fatalf("shard 1 released at its old due time: %v", out)
	}
	s.due(t0.Add(3*time.Second), out)
	if _, ok := out[1]; !ok || s.Len() != 0 {
		t.Fatalf("shard 1 not released at its new due time (out %v, held %d)", out, s.Len())
	}
}

// A replica is missing only as long as its host's recorded reports say: a
// host heard from whose reports are not taken (they gave up waiting for a
// busy loop) has an unknown replica list, and its replicas are not judged
// dead and replaced for it. At 10,000 hosts such hosts stayed up while
// replicas they ran were replaced.
func TestUnknownReplicaListIsNotMissing(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: 1000})
	f.registerHosts(4)
	f.create(1, 1)
	f.round() // places
	f.round() // start orders
	sh := f.st.Shards.Get(1)
	for _, m := range sh.Members {
		f.runs[m.HostId] = map[uint64]*drummerpb.ReplicaReport{1: {ShardId: 1, ReplicaId: m.ReplicaId, LeaderId: sh.Members[0].ReplicaId,
			Term: 2, Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER, App: "kv"}}
		f.report(m.HostId)
	}
	f.round()
	// The third member's replica is not in its host's next report, and
	// then that host is only heard from.
	quiet := sh.Members[2].HostId
	delete(f.runs[quiet], 1)
	f.report(quiet)
	repairing := func() bool { return f.st.Shards.Get(1).Repair != nil }
	dead := time.Duration(f.st.Config.DeadTimeoutMs) * time.Millisecond
	for range int(2 * dead / time.Second) {
		f.now = f.now.Add(time.Second)
		for i := range 4 {
			if h := hostName(i); h != quiet {
				f.report(h)
			}
		}
		f.n.Heard(quiet, f.now)
		f.round()
		if repairing() {
			t.Fatalf("shard 1 repaired at %s while its host's reports were not taken", f.now.Sub(t0))
		}
	}
	// Its next report taken says the replica is still missing: dead.
	f.report(quiet)
	for range 3 {
		f.now = f.now.Add(time.Second)
		f.round()
	}
	if !repairing() {
		t.Fatal("shard 1 not repaired once its host's report showed the replica missing for longer than dead_timeout")
	}
}

// A starting shard whose replicas were never reported running on hosts
// that are up says so: the hosts are not dead, and "until the dead hosts
// return" would send an operator after the wrong thing.
func TestNeverStartedOnLiveHostsIsExplained(t *testing.T) {
	f := newFixture(t, Config{PatrolPerSecond: 1000})
	f.registerHosts(3)
	f.create(1, 1)
	f.round() // places
	f.round() // start orders, never carried out
	for range int((planner.StartGrace + time.Minute) / (5 * time.Second)) {
		f.now = f.now.Add(5 * time.Second)
		for i := range 3 {
			f.report(hostName(i))
		}
		f.round()
	}
	r := f.n.Verdicts(f.st, []uint64{1}, f.now)[1]
	text := strings.Join(r.Explanation, "\n")
	if !strings.Contains(text, "3 of those hosts are up but have not reported the replica running") || strings.Contains(text, "until the dead hosts return") {
		t.Fatalf("explanation of a shard never started on live hosts:\n%s", text)
	}
}
