package playground

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// world is what a forecast is computed from: the deployment's runtime
// configuration, hosts and shards as the drummer leader reports them, and
// the hosts the playground has stopped or paused.
type world struct {
	cfg    *drummerpb.RuntimeConfig
	hosts  []*drummerpb.HostStatus
	shards []*drummerpb.ShardStatus
	// down holds the host IDs whose process is stopped or paused.
	down map[string]bool
	now  time.Time
}

func (w *world) host(id string) *drummerpb.HostStatus {
	for _, h := range w.hosts {
		if h.Id == id {
			return h
		}
	}
	return nil
}

func ms(v uint64) time.Duration { return time.Duration(v) * time.Millisecond }

func (w *world) suspectTimeout() time.Duration { return ms(w.cfg.GetSuspectTimeoutMs()) }
func (w *world) deadTimeout() time.Duration    { return ms(w.cfg.GetDeadTimeoutMs()) }

// shardDeadTimeout is the dead timeout that applies to a shard's
// replicas, and whether the shard overrides the deployment's.
func (w *world) shardDeadTimeout(id uint64) (time.Duration, bool) {
	if o := w.cfg.GetShardOverrides()[id]; o != nil && o.DeadTimeoutMs != 0 {
		return ms(o.DeadTimeoutMs), true
	}
	return w.deadTimeout(), false
}

// silence is how long host id has not reported (0 if it never did or is
// unknown).
func (w *world) silence(id string) time.Duration {
	h := w.host(id)
	if h == nil || h.LastHeartbeatUnixMs == 0 {
		return 0
	}
	return max(0, w.now.Sub(time.UnixMilli(h.LastHeartbeatUnixMs)))
}

// impact is what losing one host does to the shards it holds replicas of.
type impact struct {
	// shards have a replica on the host.
	shards []uint64
	// unavailable keep fewer than a quorum of voters on live hosts.
	unavailable []uint64
	// lost keep fewer than a quorum of voters anywhere: with the host's
	// data gone they cannot recover without an operator.
	lost []uint64
	// stuck keep a quorum but have no other host that could take a new
	// replica.
	stuck []uint64
	// ownDead have their own dead_timeout.
	ownDead map[uint64]time.Duration
}

// impactOf computes the impact of losing host id, as the planner sees
// it: a replica counts as live when its host is neither dead nor stopped
// by the playground; a new replica can go to an up, active host that runs
// the shard's app and holds no replica of the shard (by ID or address).
func (w *world) impactOf(id string) impact {
	im := impact{ownDead: map[uint64]time.Duration{}}
	gone := func(hid string) bool {
		if hid == id || w.down[hid] {
			return true
		}
		h := w.host(hid)
		return h == nil || h.State == "dead" || h.AdminState == "replaced"
	}
	for _, s := range w.shards {
		on := false
		for _, m := range s.Members {
			if m.HostId == id {
				on = true
			}
		}
		if !on {
			continue
		}
		im.shards = append(im.shards, s.ShardId)
		if d, own := w.shardDeadTimeout(s.ShardId); own {
			im.ownDead[s.ShardId] = d
		}
		voters, live, elsewhere := 0, 0, 0
		used := map[string]bool{}
		for _, m := range s.Members {
			used[m.HostId], used["addr:"+m.RaftAddress] = true, true
			if m.Role != "voter" {
				continue
			}
			voters++
			if m.HostId != id {
				elsewhere++
				if !gone(m.HostId) {
					live++
				}
			}
		}
		q := voters/2 + 1
		if live < q {
			im.unavailable = append(im.unavailable, s.ShardId)
		}
		if elsewhere < q {
			im.lost = append(im.lost, s.ShardId)
		}
		target := false
		for _, h := range w.hosts {
			if h.Id == id || w.down[h.Id] || h.State != "up" || h.AdminState != "active" ||
				used[h.Id] || used["addr:"+h.RaftAddress] || !slices.Contains(h.Apps, s.App) {
				continue
			}
			target = true
			break
		}
		if !target && live >= q {
			im.stuck = append(im.stuck, s.ShardId)
		}
	}
	slices.Sort(im.shards)
	return im
}

// secs says "in 6 s" for a time ahead, rounded up to whole seconds.
func secs(d time.Duration) string {
	if d <= 0 {
		return "now"
	}
	return fmt.Sprintf("in %d s", int(math.Ceil(d.Seconds())))
}

// human rounds a duration for reading: to 10ms below a second, to 100ms
// below a minute, to seconds above.
func human(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(10 * time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// shardList says "shard 3" or "shards 1, 2 and 4" (at most 10 named).
func shardList(ids []uint64) string {
	if len(ids) == 1 {
		return fmt.Sprintf("shard %d", ids[0])
	}
	var parts []string
	for i, id := range ids {
		if i == 10 {
			parts = append(parts, fmt.Sprintf("%d more", len(ids)-10))
			break
		}
		parts = append(parts, fmt.Sprint(id))
	}
	last := parts[len(parts)-1]
	return "shards " + strings.Join(parts[:len(parts)-1], ", ") + " and " + last
}

// lossLines is the forecast for host n (drummer ID id) going silent: when
// it is suspect, when dead, and what happens to its replicas. replicas
// names what is re-created ("its 3 replicas" or "the old identity's 3
// replicas").
func (w *world) lossLines(n int, id string, who string) []string {
	im := w.impactOf(id)
	silent := w.silence(id)
	suspect, dead := w.suspectTimeout(), w.deadTimeout()
	var out []string
	switch {
	case silent >= dead:
		out = append(out, fmt.Sprintf("  now      %s is already dead (silent for %s, dead_timeout is %s)", who, silent.Round(time.Second), dead))
	case silent >= suspect:
		out = append(out, fmt.Sprintf("  now      %s is already suspect (silent for %s): nothing new is placed on it", who, silent.Round(time.Second)))
		out = append(out, fmt.Sprintf("  %-8s %s is declared dead (silent for dead_timeout, %s)", secs(dead-silent), who, dead))
	default:
		out = append(out, fmt.Sprintf("  %-8s %s is suspect (silent for suspect_timeout, %s): nothing new is placed on it", secs(suspect-silent), who, suspect))
		out = append(out, fmt.Sprintf("  %-8s %s is declared dead (silent for dead_timeout, %s)", secs(dead-silent), who, dead))
	}
	out = append(out, im.replicaLines(who, "")...)
	var own []uint64
	for id := range im.ownDead {
		own = append(own, id)
	}
	slices.Sort(own)
	for _, sid := range own {
		out = append(out, fmt.Sprintf("  note:    shard %d has its own dead_timeout (%s): its replica is repaired %s", sid, im.ownDead[sid], secs(im.ownDead[sid]-silent)))
	}
	return out
}

// movable are the shards of the impact whose lost replica can be
// re-created now: they keep a quorum and have somewhere to go.
func (im impact) movable() []uint64 {
	var out []uint64
	for _, id := range im.shards {
		if !slices.Contains(im.unavailable, id) && !slices.Contains(im.stuck, id) {
			out = append(out, id)
		}
	}
	return out
}

// replicaLines says what becomes of the replicas the lost host held.
// where qualifies the other hosts (e.g. ", the new identity among them").
func (im impact) replicaLines(who, where string) []string {
	if len(im.shards) == 0 {
		return []string{fmt.Sprintf("           %s holds no replicas: nothing needs repairing", who)}
	}
	var out []string
	if mv := im.movable(); len(mv) > 0 {
		out = append(out,
			fmt.Sprintf("           then its %s (%s) will be re-created on other hosts%s:", plural(len(mv), "replica", "replicas"), shardList(mv), where),
			"           Drummer adds a new replica, lets it catch up, then removes the lost one (never below quorum)")
	}
	if len(im.lost) > 0 {
		out = append(out, fmt.Sprintf("  note:    %s: fewer than a quorum of replicas left anywhere; no recovery without an operator", shardList(im.lost)))
	}
	if un := slices.DeleteFunc(slices.Clone(im.unavailable), func(id uint64) bool { return slices.Contains(im.lost, id) }); len(un) > 0 {
		out = append(out, fmt.Sprintf("  note:    %s: fewer than a quorum of live replicas, so unavailable and not repaired (a repair needs a quorum) until enough of their hosts come back", shardList(un)))
	}
	if len(im.stuck) > 0 {
		out = append(out, fmt.Sprintf("  note:    %s: nowhere else to go (every other up host already holds one of their replicas); under-replicated until a host is added or comes back", shardList(im.stuck)))
	}
	return out
}
