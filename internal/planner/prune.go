package planner

import (
	"time"

	"github.com/drummerhq/drummer/internal/db"
)

// Bounds on the observed (soft) state; see Prune.
const (
	// ResultTTL is how long an order result is kept for the planner to see.
	ResultTTL = 2 * time.Minute
	// UnregisteredTTL is how long a host that is not registered and no
	// longer reports is remembered.
	UnregisteredTTL = 10 * time.Minute
)

// Prune bounds the observed state o: order results older than ResultTTL
// (resultAt records when each arrived, per host and order ID), hosts
// neither registered in st nor heard from within UnregisteredTTL,
// memberships of shards st no longer has, and last-running times of
// replicas that are no longer members. It returns the hosts it forgot, so
// that callers can drop what else they keep per host. The server and the
// simulator both call it, so the simulator checks the real bounds.
//
// The per-shard part (memberships, claims, last-running times) costs
// O(everything observed); it runs only when shards is set (the DB deleted
// shards or dropped member records since the last one) or a host was
// forgotten, so that a fleet that only adds replicas never pays for it.
func Prune(o *Observed, resultAt map[string]map[string]time.Time, st *db.State, now time.Time, shards bool) (forgotten []string) {
	for hostID, at := range resultAt {
		h := o.Hosts[hostID]
		for id, t := range at {
			if now.Sub(t) > ResultTTL {
				delete(at, id)
				if h != nil {
					delete(h.Results, id)
				}
			}
		}
	}
	for id, h := range o.Hosts {
		if _, ok := st.Hosts[id]; !ok && now.Sub(h.LastHeard) > UnregisteredTTL {
			delete(o.Hosts, id)
			delete(resultAt, id)
			forgotten = append(forgotten, id)
		}
	}
	if !shards && len(forgotten) == 0 {
		return forgotten
	}
	for id := range o.Memberships {
		if _, ok := st.Shards.Lookup(id); !ok {
			delete(o.Memberships, id)
		}
	}
	pruneClaims(o, st)
	for k := range o.LastRunning {
		sh, ok := st.Shards.Lookup(k.ShardID)
		if !ok || db.Member(sh, k.ReplicaID) == nil {
			delete(o.LastRunning, k)
		}
	}
	return forgotten
}
