package db

import (
	"fmt"
	"testing"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// bigState is a launched deployment of n 3-replica shards on n*3/100
// hosts, built directly (the records apply would make).
func bigState(n int) *State {
	s := New()
	hosts := max(3, n*3/100)
	for i := range hosts {
		s.putHost(&dbpb.Host{Id: fmt.Sprintf("host-%05d", i), RaftAddress: fmt.Sprintf("127.0.%d.%d:7100", i/256, i%256), Apps: []string{"kv"}})
	}
	for i := 1; i <= n; i++ {
		sh := &dbpb.Shard{Id: uint64(i), App: "kv", Replicas: 3, Phase: dbpb.ShardPhase_SHARD_PHASE_ACTIVE, NextReplicaId: 4}
		for r := range 3 {
			sh.Members = append(sh.Members, &dbpb.Replica{ReplicaId: uint64(r + 1), HostId: fmt.Sprintf("host-%05d", (i*3+r)%hosts), Role: dbpb.Role_ROLE_VOTER})
		}
		s.putShard(sh)
	}
	return s
}

// The costs of a view (Clone) and of the state hash at fleet sizes:
//
//	go test ./internal/db -run '^$' -bench 'Clone|Hash' -benchtime 5x
func BenchmarkClone(b *testing.B) {
	for _, n := range []int{33_334, 333_334} {
		s := bigState(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				_ = s.Clone()
			}
		})
	}
}

func BenchmarkHash(b *testing.B) {
	for _, n := range []int{33_334, 333_334} {
		s := bigState(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				_ = s.Hash()
			}
		})
	}
}
