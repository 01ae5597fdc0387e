package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/internal/dbpb"
)

var faultNames = []string{"crash", "permanent_death", "disk_wipe", "partition", "slow_orders", "failing_orders", "failover", "operator", "shard_churn", "config_change"}

// FaultNames lists the fault kinds ParseFaults knows.
func FaultNames() []string { return slices.Clone(faultNames) }

// ParseFaults parses "all", "none" (or "") or a comma list of FaultNames.
func ParseFaults(s string) (Faults, error) {
	switch s {
	case "all":
		return AllFaults(), nil
	case "", "none":
		return Faults{}, nil
	}
	var f Faults
	ptr := map[string]*bool{
		"crash": &f.Crash, "permanent_death": &f.PermanentDeath, "disk_wipe": &f.DiskWipe, "partition": &f.Partition,
		"slow_orders": &f.SlowOrders, "failing_orders": &f.FailingOrders, "failover": &f.Failover, "operator": &f.Operator,
		"shard_churn": &f.ShardChurn, "config_change": &f.ConfigChange,
	}
	for _, name := range strings.Split(s, ",") {
		p := ptr[strings.TrimSpace(name)]
		if p == nil {
			return Faults{}, fmt.Errorf("unknown fault %q (known: %s)", name, strings.Join(faultNames, ", "))
		}
		*p = true
	}
	return f, nil
}

// rates are per-second probabilities of each fault, drawn per seed so
// that some runs are calm and some are stormy.
type rates struct {
	crash, permDeath, wipe, partition, slow, failover float64
	operator, churn, config                           float64
	orderFail                                         float64
	lostProposal                                      float64 // per decision batch
}

func newRates(r *rand.Rand, f Faults) rates {
	scale := []float64{0.5, 1, 1, 2}[r.IntN(4)]
	pick := func(on bool, p float64) float64 {
		if !on {
			return 0
		}
		return p * scale * (0.5 + r.Float64())
	}
	return rates{
		crash:        pick(f.Crash, 0.035),
		permDeath:    pick(f.PermanentDeath, 0.005),
		wipe:         pick(f.DiskWipe, 0.006),
		partition:    pick(f.Partition, 0.02),
		slow:         pick(f.SlowOrders, 0.01),
		failover:     pick(f.Failover, 0.012),
		operator:     pick(f.Operator, 0.03),
		churn:        pick(f.ShardChurn, 0.01),
		config:       pick(f.ConfigChange, 0.006),
		orderFail:    pick(f.FailingOrders, 0.06),
		lostProposal: pick(f.Failover, 0.02),
	}
}

func (w *World) aliveHosts() []*Host {
	var out []*Host
	for _, h := range w.hosts {
		if h.alive {
			out = append(out, h)
		}
	}
	return out
}

func (w *World) downHosts() int {
	n := 0
	for _, h := range w.hosts {
		if !h.alive {
			n++
		}
	}
	return n
}

func (w *World) permanentlyLost() int {
	n := 0
	for _, h := range w.hosts {
		if h.permDead || h.gen > 0 || h.wipe {
			n++
		}
	}
	return n
}

func (w *World) randomHost(alive bool) *Host {
	var c []*Host
	for _, h := range w.hosts {
		if h.alive == alive && !h.permDead {
			c = append(c, h)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[w.rng.IntN(len(c))]
}

// injectFaults runs once per simulated second during the fault phase.
func (w *World) injectFaults() {
	r := w.rates
	maxDown := 2
	if len(w.hosts) <= 4 {
		maxDown = 1
	}
	if w.chance(r.crash) && w.downHosts() < maxDown {
		if h := w.randomHost(true); h != nil {
			var down time.Duration
			switch x := w.rng.IntN(10); {
			case x < 3:
				down = w.dur(time.Second, 4*time.Second)
			case x < 7:
				down = w.dur(5*time.Second, 25*time.Second)
			default:
				down = w.dur(30*time.Second, 100*time.Second)
			}
			w.stats.Crashes++
			w.crash(h, down, "crash")
		}
	}
	if w.chance(r.permDeath) && w.downHosts() < maxDown && w.permanentlyLost() < max(1, len(w.hosts)-4) {
		if h := w.randomHost(true); h != nil {
			w.stats.PermanentDeaths++
			w.crash(h, 0, "dead for good")
			h.permDead = true
			w.hostDeadAt[h.id] = w.now
		}
	}
	if w.chance(r.wipe) && w.downHosts() < maxDown && w.permanentlyLost() < max(1, len(w.hosts)-4) {
		if h := w.randomHost(true); h != nil {
			w.stats.Wipes++
			w.crash(h, w.dur(2*time.Second, 60*time.Second), "disk replaced")
			h.wipe = true
		}
	}
	if w.chance(r.partition) {
		if h := w.randomHost(true); h != nil && !h.partitioned(w.now) {
			w.stats.Partitions++
			d := w.dur(2*time.Second, 60*time.Second)
			h.partTill = w.now.Add(d)
			w.tracef("host %s partitioned from drummer for %s", h.id, d)
		}
	}
	if w.chance(r.slow) {
		if h := w.randomHost(true); h != nil {
			d := w.dur(5*time.Second, 60*time.Second)
			h.slowTill = w.now.Add(d)
			w.tracef("host %s executes orders slowly for %s", h.id, d)
		}
	}
	if w.chance(r.failover) {
		w.failover()
	}
	if w.chance(r.operator) {
		w.operatorAction()
	}
	if w.chance(r.churn) {
		w.shardChurn()
	}
	if w.chance(r.config) {
		w.runtimeConfigChange()
	}
}

func (w *World) dbHost(h *Host) *dbpb.Host { return w.st.Hosts[h.id] }

func (w *World) setAdmin(h *Host, a dbpb.HostAdmin) bool {
	return w.operator(&dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{HostId: h.id, Admin: a}}, false)
}

func (w *World) operatorAction() {
	h := w.hosts[w.rng.IntN(len(w.hosts))]
	dh := w.dbHost(h)
	if dh == nil || dh.Admin == dbpb.HostAdmin_HOST_ADMIN_REPLACED {
		return
	}
	// At most one host (two in larger fleets) out of service at a time.
	inactive := 0
	for _, o := range w.st.Hosts {
		if o.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE && o.Admin != dbpb.HostAdmin_HOST_ADMIN_REPLACED {
			inactive++
		}
	}
	canDisable := inactive < 1+len(w.hosts)/6
	switch x := w.rng.IntN(11); {
	case x == 10:
		// Remove a host for good (force: it may still hold replicas, which
		// are then repaired elsewhere). Usually a dead one; rarely one that
		// is still running, which registers again on its next report.
		for _, c := range w.hosts {
			if c.permDead && w.dbHost(c) != nil {
				h = c
				break
			}
		}
		if !h.permDead && !w.chance(0.2) {
			return
		}
		if w.operator(&dbpb.Command_RemoveHost{RemoveHost: &dbpb.RemoveHost{HostId: h.id, Force: true}}, false) {
			w.stats.HostsRemoved++
		}
	case x < 3:
		// Cordon or uncordon.
		if dh.Admin == dbpb.HostAdmin_HOST_ADMIN_CORDONED {
			w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_ACTIVE)
		} else if canDisable && dh.Admin == dbpb.HostAdmin_HOST_ADMIN_ACTIVE && w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_CORDONED) {
			w.stats.Cordons++
		}
	case x < 4:
		// Drain one host at a time, only in fleets large enough.
		if len(w.hosts) < 5 || dh.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE || !canDisable {
			return
		}
		for _, o := range w.st.Hosts {
			if o.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING || o.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINED {
				return
			}
		}
		if w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_DRAINING) {
			w.stats.Drains++
		}
	case x < 5:
		// Bring a drained host back.
		if dh.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINED || dh.Admin == dbpb.HostAdmin_HOST_ADMIN_DRAINING {
			w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_ACTIVE)
		}
	default:
		// Maintenance window, usually with a reboot inside it.
		win := w.dur(15*time.Second, 90*time.Second)
		until := w.now.Add(win)
		if !w.operator(&dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{HostId: h.id, MaintenanceUntilUnixMs: until.UnixMilli(), MaintenanceOnly: true}}, false) {
			return
		}
		w.stats.Maintenances++
		if h.alive && w.chance(0.7) && w.downHosts() < 2 {
			w.stats.Crashes++
			w.crash(h, w.dur(2*time.Second, win), "maintenance reboot")
		}
	}
}

func (w *World) shardChurn() {
	if w.chance(0.5) || len(w.st.Shards) <= 2 {
		regions := map[string]bool{}
		for _, h := range w.hosts {
			regions[h.region] = true
		}
		// Sometimes the operator re-creates a deleted shard ID (its old
		// replicas may still run, waiting for their cleanup).
		var reuse []uint64
		if w.chance(0.3) {
			for _, id := range sortedKeys(w.groups) {
				if w.st.Shards[id] == nil {
					reuse = append(reuse, id)
					break
				}
			}
		}
		w.createShardsWithIDs(1+w.rng.IntN(3), len(regions), reuse)
		return
	}
	ids := w.st.SortedShardIDs()
	id := ids[w.rng.IntN(len(ids))]
	if w.operator(&dbpb.Command_DeleteShards{DeleteShards: &dbpb.DeleteShards{ShardIds: []uint64{id}}}, false) {
		w.stats.ShardsDeleted++
		if gs := w.groups[id]; len(gs) > 0 {
			gs[len(gs)-1].deleted = true
		}
	}
}

func (w *World) runtimeConfigChange() {
	c := proto.CloneOf(w.st.Config)
	switch w.rng.IntN(4) {
	case 0:
		nc := w.randomDBConfig()
		nc.ShardOverrides = c.ShardOverrides
		c = nc
	case 1:
		c.DeadTimeoutMs = c.SuspectTimeoutMs + uint64(3000+1000*w.rng.IntN(30))
		c.HostGcAfterMs = max(c.HostGcAfterMs, c.DeadTimeoutMs)
	case 2:
		ids := w.st.SortedShardIDs()
		if len(ids) == 0 {
			return
		}
		id := ids[w.rng.IntN(len(ids))]
		if c.ShardOverrides == nil {
			c.ShardOverrides = map[uint64]*dbpb.ShardTimeouts{}
		}
		c.ShardOverrides[id] = &dbpb.ShardTimeouts{DeadTimeoutMs: c.SuspectTimeoutMs + uint64(2000+1000*w.rng.IntN(40))}
	case 3:
		c.MaxConcurrentRepairs = uint32([]int{1, 2, 3, 64}[w.rng.IntN(4)])
		c.MaxRepairsPerHost = uint32(1 + w.rng.IntN(4))
	}
	if w.operator(&dbpb.Command_SetConfig{SetConfig: &dbpb.SetConfig{Config: c}}, false) {
		w.stats.ConfigChanges++
	}
}

// stopFaults ends the fault phase: crashed hosts come back soon, partitions
// heal, orders are fast again and maintenance windows end. Hosts dead for
// good stay dead; drains stay, and most runs lift the cordons.
func (w *World) stopFaults() {
	w.settled = true
	w.tracef("faults stop")
	if w.chance(0.7) {
		for _, h := range w.hosts {
			if dh := w.dbHost(h); dh != nil && dh.Admin == dbpb.HostAdmin_HOST_ADMIN_CORDONED {
				w.setAdmin(h, dbpb.HostAdmin_HOST_ADMIN_ACTIVE)
			}
		}
	}
	for _, h := range w.hosts {
		if !h.alive && !h.permDead {
			back := w.now.Add(w.dur(0, 5*time.Second))
			if h.restartAt.IsZero() || h.restartAt.After(back) {
				h.restartAt = back
			}
		}
		h.partTill = time.Time{}
		h.slowTill = time.Time{}
		if dh := w.dbHost(h); dh != nil && dh.MaintenanceUntilUnixMs != 0 {
			w.operator(&dbpb.Command_SetHostAdmin{SetHostAdmin: &dbpb.SetHostAdmin{HostId: h.id, MaintenanceOnly: true}}, false)
		}
	}
}
