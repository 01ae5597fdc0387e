package scheduler

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/planner"
)

// FullZombieEvery is how often each evaluated host's replicas are all
// checked for zombies. In between, only the replicas a host started
// reporting (or listing on disk) since are: a host's zombie check read
// every replica it reports, and at 10,000 hosts that was a fifth of the
// leader's loop. A zombie appears on a host when it reports a replica it
// did not (checked at once), or when the DB drops a member (the DB
// records that cleanup itself); the full check is the backstop, and runs
// too when a host's liveness changes.
const FullZombieEvery = time.Minute

// zombies tracks what each host's zombie check must look at.
type zombies struct {
	gained map[string]map[planner.ReplicaKey]struct{}
	full   map[string]struct{} // hosts to check in full at their next evaluation
	at     map[string]time.Time
}

func (z *zombies) reset() { *z = zombies{} }

func (z *zombies) ensure() {
	if z.gained == nil {
		z.gained = map[string]map[planner.ReplicaKey]struct{}{}
		z.full = map[string]struct{}{}
		z.at = map[string]time.Time{}
	}
}

// gain notes a replica a host reports that it did not report before.
func (n *Node) gain(hostID string, k planner.ReplicaKey) {
	if !n.active {
		return
	}
	n.zombies.ensure()
	g := n.zombies.gained[hostID]
	if g == nil {
		g = map[planner.ReplicaKey]struct{}{}
		n.zombies.gained[hostID] = g
	}
	g[k] = struct{}{}
	n.markH(hostID)
}

// checkFully asks for a full zombie check at the host's next evaluation.
func (n *Node) checkFully(hostID string) {
	n.zombies.ensure()
	n.zombies.full[hostID] = struct{}{}
}

// zombieInput is Input.Zombies for the hosts a round evaluates. What it
// hands over is forgotten, except for hosts the planner would not check
// (unregistered or not up): their gained keys wait for them.
func (n *Node) zombieInput(st *db.State, hosts []string, now time.Time) map[string][]planner.ReplicaKey {
	z := &n.zombies
	z.ensure()
	out := make(map[string][]planner.ReplicaKey, len(hosts))
	for _, id := range hosts {
		if st.Hosts[id] == nil || n.live.state[id] != planner.Up {
			continue
		}
		_, full := z.full[id]
		if at, ok := z.at[id]; full || !ok || now.Sub(at) >= FullZombieEvery {
			out[id] = nil
			z.at[id] = now
		} else if g := z.gained[id]; len(g) > 0 {
			out[id] = slices.SortedFunc(maps.Keys(g), func(a, b planner.ReplicaKey) int {
				return cmp.Or(cmp.Compare(a.ShardID, b.ShardID), cmp.Compare(a.ReplicaID, b.ReplicaID))
			})
		}
		delete(z.full, id)
		delete(z.gained, id)
	}
	return out
}

// pruneZombies drops what is kept for hosts no longer observed.
func (n *Node) pruneZombies() {
	gone := func(id string) bool { _, ok := n.obs.Hosts[id]; return !ok }
	maps.DeleteFunc(n.zombies.gained, func(id string, _ map[planner.ReplicaKey]struct{}) bool { return gone(id) })
	maps.DeleteFunc(n.zombies.full, func(id string, _ struct{}) bool { return gone(id) })
	maps.DeleteFunc(n.zombies.at, func(id string, _ time.Time) bool { return gone(id) })
}
