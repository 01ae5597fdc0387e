package db

import (
	"testing"

	"github.com/drummerhq/drummer/internal/dbpb"
)

// After a host identity is replaced, two hosts share its raft address. The
// owner is the one not replaced, whatever the map order (apply must be
// deterministic on every replica); found by internal/sim.
func TestHostByRaftAddressPrefersTheLiveIdentity(t *testing.T) {
	for range 50 { // map iteration order differs between states
		s := fixture(t)
		decide(t, s,
			&dbpb.Decision{Kind: &dbpb.Decision_ReplaceHost{ReplaceHost: &dbpb.ReplaceHost{OldHostId: "h3", NewHostId: "h3b"}}},
			regHost("h3b", "127.0.0.1:7003", "r3"))
		if h := s.HostByRaftAddress("127.0.0.1:7003"); h == nil || h.Id != "h3b" {
			t.Fatalf("owner of h3's address: %v, want h3b", h)
		}
		// A third identity on the address conflicts with h3b (not with the
		// replaced h3), every time.
		if c := decide(t, s, regHost("h3c", "127.0.0.1:7003", "r3")); c[0] != dbpb.Code_CODE_CONFLICT {
			t.Fatalf("second live identity on one address: %v", c)
		}
	}
}

// Deleting a shard with a member on a host that was removed (or replaced)
// records no cleanup there: no agent will ever confirm it, and nothing
// would drop it; found by internal/sim.
func TestNoCleanupForGoneHosts(t *testing.T) {
	s := fixture(t)
	mustOK(t, apply(t, s, &dbpb.Command{Op: &dbpb.Command_RemoveHost{RemoveHost: &dbpb.RemoveHost{HostId: "h3", Force: true}}}))
	decide(t, s,
		&dbpb.Decision{Kind: &dbpb.Decision_ReplaceHost{ReplaceHost: &dbpb.ReplaceHost{OldHostId: "h2", NewHostId: "h2b"}}},
		regHost("h2b", "127.0.0.1:7002", "r2"))
	mustOK(t, apply(t, s, &dbpb.Command{Op: &dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{1}}}}))
	if _, ok := s.Cleanups[CleanupKey{"h1", 1, 1}]; !ok {
		t.Fatal("no cleanup for the member on a live host")
	}
	if len(s.Cleanups) != 1 {
		t.Fatalf("cleanups %v, want only h1's", s.Cleanups)
	}
}
