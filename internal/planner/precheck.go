package planner

import (
	"fmt"

	"github.com/drummerhq/drummer/internal/db"
)

// DrainCheck reports why draining hostID could never finish: a shard with
// a replica there has no other eligible host to move it to. Operations that
// cannot complete are refused up front instead of hanging for ever.
func DrainCheck(in Input, hostID string) error {
	p := newPlanner(in)
	for id := range p.st.ShardsOnHost(hostID) {
		sh := p.st.Shards.Get(id)
		m := db.MemberOnHost(sh, hostID)
		if m == nil {
			continue
		}
		v := p.newShardView(sh)
		// The replacement may not land on the draining host itself, nor
		// where the shard already is; eligible() already excludes both.
		if host := p.pickHost(v, v.byID[m.ReplicaId]); host == "" {
			why := "no eligible host"
			if len(v.explain) > 0 {
				why = v.explain[len(v.explain)-1]
			}
			return fmt.Errorf("shard %d has nowhere to move replica %d: %s", id, m.ReplicaId, why)
		}
	}
	return nil
}
