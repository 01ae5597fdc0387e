package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
)

// fullReport is a host's full report of 100 replicas, a third of them
// leaders carrying their shard's membership (as the agent sends them).
func fullReport(seq uint64) *drummerpb.ReportRequest {
	r := &drummerpb.ReportRequest{HostId: "h1", RaftAddress: "10.0.0.1:7001", ApiAddress: "10.0.1.1:7001",
		Apps: []string{"kv"}, Session: 1, Seq: seq, Full: true}
	for i := range 100 {
		rr := &drummerpb.ReplicaReport{ShardId: uint64(i + 1), ReplicaId: 1, App: "kv", LeaderId: 1, Term: 2, ConfigChangeId: 7}
		if i%3 == 0 {
			rr.Membership = &drummerpb.Membership{ConfigChangeId: 7, Voters: map[uint64]string{1: "10.0.0.1:7001", 2: "10.0.0.2:7002", 3: "10.0.0.3:7003"}}
		}
		r.Replicas = append(r.Replicas, rr)
	}
	return r
}

// The leader's cost of taking a full report that repeats what it knew
// (every 30 s from every host; each one a fresh message from the wire):
//
//	go test ./internal/scheduler -run '^$' -bench Step
func BenchmarkStepFullReport(b *testing.B) {
	n := New(Config{Started: t0})
	n.Become(1)
	n.Absorb(db.New(), db.Dirty{}, t0)
	now := t0
	n.Step(fullReport(1), now, true)
	reps := make([]*drummerpb.ReportRequest, 64)
	for i := range reps {
		reps[i] = fullReport(uint64(i + 2))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now = now.Add(time.Second)
		n.Step(reps[i%len(reps)], now, true)
	}
	_ = fmt.Sprint(len(n.dirtyS))
}

// A repeated claim changes nothing; a changed one marks its shard dirty.
func TestRepeatedClaimSkipped(t *testing.T) {
	n := New(Config{Started: t0})
	n.Become(1)
	n.Step(fullReport(1), t0, true)
	clear(n.dirtyS)
	clear(n.dirtyP)
	n.Step(fullReport(2), t0.Add(time.Second), true)
	if len(n.dirtyS)+len(n.dirtyP) != 0 {
		t.Fatalf("a repeated full report made %d shards dirty", len(n.dirtyS)+len(n.dirtyP))
	}
	r := fullReport(3)
	r.Replicas[0].Membership.Voters[4] = "10.0.0.4:7004"
	r.Replicas[0].Membership.ConfigChangeId = 8
	r.Replicas[0].ConfigChangeId = 8
	n.Step(r, t0.Add(2*time.Second), true)
	if _, ok := n.dirtyP[1]; !ok {
		t.Fatal("a new claim did not make its shard dirty")
	}
	if got := n.Observed().Claims[1]["h1"].Latest.M.ConfigChangeId; got != 8 {
		t.Fatalf("latest claim at ConfigChangeID %d, want 8", got)
	}
}
