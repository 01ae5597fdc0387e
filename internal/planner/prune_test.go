package planner

import (
	"testing"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func TestPruneBoundsObservedState(t *testing.T) {
	f := newFixture(t)
	f.host("a", "r1")
	f.shard(1, "a")
	o := f.obs
	// A registered host with an old and a fresh order result, and an
	// unregistered host heard from long ago.
	o.Hosts["a"] = &HostObs{LastHeard: f.now, Results: map[string]*drummerpb.OrderResult{"old": {}, "new": {}}}
	o.Hosts["gone"] = &HostObs{LastHeard: f.now.Add(-UnregisteredTTL - time.Second)}
	o.Memberships[1] = &drummerpb.Membership{}
	o.Memberships[99] = &drummerpb.Membership{}
	o.LastRunning[ReplicaKey{ShardID: 1, ReplicaID: 1}] = f.now
	o.LastRunning[ReplicaKey{ShardID: 1, ReplicaID: 7}] = f.now
	resultAt := map[string]map[string]time.Time{
		"a":    {"old": f.now.Add(-ResultTTL - time.Second), "new": f.now},
		"gone": {},
	}
	forgotten := Prune(o, resultAt, f.st, f.now, true)
	if len(forgotten) != 1 || forgotten[0] != "gone" || o.Hosts["gone"] != nil || resultAt["gone"] != nil {
		t.Errorf("forgotten %v; hosts kept %d", forgotten, len(o.Hosts))
	}
	if _, ok := o.Hosts["a"].Results["old"]; ok || len(o.Hosts["a"].Results) != 1 || len(resultAt["a"]) != 1 {
		t.Errorf("results after prune: %v / %v", o.Hosts["a"].Results, resultAt["a"])
	}
	if o.Memberships[99] != nil || o.Memberships[1] == nil {
		t.Errorf("memberships after prune: %v", o.Memberships)
	}
	if len(o.LastRunning) != 1 {
		t.Errorf("last running after prune: %v", o.LastRunning)
	}
}
