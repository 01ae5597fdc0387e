package scheduler

import (
	"maps"

	"github.com/drummerhq/drummer/internal/db"
)

// Attention: a repair takes a round trip to the hosts for every step, and
// an order waits for the host's next report, which for a host doing
// nothing comes one report_interval later (5 s at fleet size). So the
// hosts that take part in a repair in flight — every member's host, since
// any live voter may carry out a membership change, and the new replica's
// — are told to report to the leader at the fast cadence
// (ReportResponse.expect_orders) until the repair ends. Shards the last
// verdict found unavailable are left out: their repairs wait for a quorum,
// not for reports. Recomputed once a second with the repairs in flight;
// O(repairs in flight x members).
func (n *Node) updateAttention(st *db.State) {
	next := map[string]struct{}{}
	for _, id := range st.RepairingShards() {
		if v := n.status.verdicts[id]; v != nil && v.Health == "unavailable" {
			continue
		}
		sh := st.Shards.Get(id)
		for _, m := range sh.Members {
			next[m.HostId] = struct{}{}
		}
		if h := sh.Repair.NewHostId; h != "" {
			next[h] = struct{}{}
		}
	}
	if !maps.Equal(next, n.attention) {
		n.attention = next
		n.attentionChanged = true
	}
}

// Attention returns the hosts that should report at the fast cadence
// (the caller must not modify it) and whether it changed since the last
// call.
func (n *Node) Attention() (hosts map[string]struct{}, changed bool) {
	changed, n.attentionChanged = n.attentionChanged, false
	return n.attention, changed
}
