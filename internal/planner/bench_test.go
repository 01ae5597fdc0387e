package planner

import (
	"fmt"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// benchWorld builds a launched deployment of `hosts` hosts and `shards`
// healthy 3-replica shards, with every replica reported running.
func benchWorld(b *testing.B, hosts, shards int) (*db.State, *Observed, time.Time) {
	b.Helper()
	now := time.UnixMilli(1_700_000_000_000)
	st := db.New()
	apply := func(cmd *dbpb.Command) {
		cmd.Version, cmd.NowUnixMs = db.CommandVersion, now.UnixMilli()
		if r := st.ApplyCommand(cmd); r.Code != dbpb.Code_CODE_OK && r.Code != dbpb.Code_CODE_NOOP {
			b.Fatalf("%v: %v", cmd, r.Code)
		}
	}
	apply(&dbpb.Command{Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: 1, DeploymentId: 7}}})
	obs := NewObserved()
	var regs []*dbpb.Decision
	for i := range hosts {
		id := fmt.Sprintf("h%05d", i)
		addr := fmt.Sprintf("10.0.%d.%d:7000", i/250, i%250)
		regs = append(regs, &dbpb.Decision{Kind: &dbpb.Decision_RegisterHost{RegisterHost: &dbpb.RegisterHost{
			HostId: id, RaftAddress: addr, ApiAddress: fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250),
			Labels: map[string]string{"region": fmt.Sprintf("r%d", i%3)}, Apps: []string{"kv"}}}})
		obs.Hosts[id] = &HostObs{ID: id, RaftAddress: addr, LastHeard: now, Apps: []string{"kv"},
			Labels: map[string]string{"region": fmt.Sprintf("r%d", i%3)}, APIAddress: fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250),
			Replicas: map[uint64]*drummerpb.ReplicaReport{}, Results: map[string]*drummerpb.OrderResult{}}
	}
	apply(&dbpb.Command{Epoch: 1, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: regs}}})
	var specs []*dbpb.ShardSpec
	for i := 1; i <= shards; i++ {
		specs = append(specs, &dbpb.ShardSpec{ShardId: uint64(i), App: "kv", Replicas: 3})
	}
	apply(&dbpb.Command{Op: &dbpb.Command_CreateShards{CreateShards: &dbpb.CreateShards{Shards: specs}}})
	apply(&dbpb.Command{Op: &dbpb.Command_Launch{Launch: &dbpb.Launch{}}})
	var places []*dbpb.Decision
	for i := 1; i <= shards; i++ {
		var hs []string
		for r := range 3 {
			hs = append(hs, fmt.Sprintf("h%05d", (i*3+r*(hosts/3+1))%hosts))
		}
		places = append(places, &dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: uint64(i), HostIds: hs}}})
	}
	apply(&dbpb.Command{Epoch: 1, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: places}}})
	for _, id := range st.SortedShardIDs() {
		sh := st.Shards.Get(id)
		ms := &drummerpb.Membership{ConfigChangeId: 1, Voters: map[uint64]string{}}
		for _, m := range sh.Members {
			ms.Voters[m.ReplicaId] = st.Hosts[m.HostId].RaftAddress
		}
		obs.AddClaim(id, sh.Members[0].HostId, sh.Members[0].ReplicaId, ms)
		for _, m := range sh.Members {
			obs.Hosts[m.HostId].Replicas[id] = &drummerpb.ReplicaReport{ShardId: id, ReplicaId: m.ReplicaId,
				LeaderId: sh.Members[0].ReplicaId, Term: 2, ConfigChangeId: 1, Role: drummerpb.ReplicaRole_REPLICA_ROLE_VOTER}
		}
	}
	apply(&dbpb.Command{Epoch: 1, Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: func() []*dbpb.Decision {
		var ds []*dbpb.Decision
		for i := 1; i <= shards; i++ {
			ds = append(ds, &dbpb.Decision{Kind: &dbpb.Decision_MarkBootstrapped{MarkBootstrapped: &dbpb.MarkBootstrapped{ShardId: uint64(i)}}})
		}
		return ds
	}()}}})
	return st, obs, now
}

// BenchmarkPlan measures one planning round over a steady deployment:
// "all" is the periodic full sweep, "dirty100" an incremental round over
// 100 changed shards (the common case), "locate1" a status query for one
// shard, "hosts100" 100 reporting hosts (their registration, cleanups and
// zombie check):
//
//	go test ./internal/planner -run '^$' -bench Plan
func BenchmarkPlan(b *testing.B) {
	for _, size := range []struct{ hosts, shards int }{{100, 10_000}, {1000, 100_000}} {
		st, obs, now := benchWorld(b, size.hosts, size.shards)
		in := Input{Now: now.Add(time.Second), State: st, Obs: obs, ObsSince: now.Add(-time.Hour), Epoch: 1, Seed: 1}
		var dirty []uint64
		for i := 1; i <= 100; i++ {
			dirty = append(dirty, uint64(i*size.shards/100))
		}
		var hosts []string
		for i := range 100 {
			hosts = append(hosts, fmt.Sprintf("h%05d", i*size.hosts/100))
		}
		for _, mode := range []string{"all", "dirty100", "locate1", "hosts100"} {
			b.Run(fmt.Sprintf("%s/shards=%d", mode, size.shards), func(b *testing.B) {
				in := in
				switch mode {
				case "all":
					in.All = true
				case "dirty100":
					in.Shards = dirty
				case "locate1":
					in.Shards, in.Hosts = dirty[:1], []string{}
				case "hosts100":
					in.Shards, in.Hosts = []uint64{}, hosts
				}
				b.ReportAllocs()
				for b.Loop() {
					out := Plan(in)
					if len(out.Decisions) != 0 {
						b.Fatalf("steady deployment produced %d decisions", len(out.Decisions))
					}
				}
			})
		}
	}
}
