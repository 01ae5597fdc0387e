package planner

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// RegionLabel is the host label placement spreads replicas over.
const RegionLabel = db.RegionLabel

func sortU64(s []uint64) []uint64 {
	slices.Sort(s)
	return slices.Compact(s)
}

// exclusion counts why hosts were not eligible, for explanations.
type exclusion map[string]int

func (e exclusion) String() string {
	if len(e) == 0 {
		return "no hosts registered"
	}
	keys := slices.Sorted(maps.Keys(e))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", e[k], k))
	}
	return strings.Join(parts, ", ")
}

// Bounds on the hosts one placement looks at. Hosts are walked from the
// least loaded (the DB's load index, adjusted by this round's plans), so
// the first eligible ones are the best by load: a placement costs
// O(candidates + the ineligible hosts skipped), not O(hosts).
const (
	// maxCandidates is how many eligible hosts a placement chooses among
	// (per region when the shard's regions are exact).
	maxCandidates = 32
	// maxScan bounds the hosts walked for one placement; when it is
	// reached the explanation counts only the hosts walked.
	maxScan = 4096
)

// eligible lists hosts that may receive a new replica of sh, the least
// loaded first, up to maxCandidates of them in each region in want (any
// region when want is nil): active (not cordoned, draining or in
// maintenance), up (not suspect or dead) and heard from by this scheduler
// within the suspect timeout, able to run the app, not already holding a
// member, and below the per-host repair limit when forRepair.
func (p *planner) eligible(sh *dbpb.Shard, forRepair bool, want map[string]bool) ([]*dbpb.Host, exclusion) {
	used := map[string]bool{}
	for _, m := range sh.Members {
		used[m.HostId] = true
		if h := p.st.Hosts[m.HostId]; h != nil {
			used["addr:"+h.RaftAddress] = true
		}
	}
	why := exclusion{}
	var out []*dbpb.Host
	perRegion := map[string]int{}
	full := 0 // regions (or the whole, with want nil) with enough candidates
	scanned := 0
	p.loadIndex().Ascend(func(id string, _ int) bool {
		if scanned++; scanned > maxScan {
			why["not examined (placement scan limit)"] += len(p.st.Hosts) - maxScan
			return false
		}
		h := p.st.Hosts[id]
		region := h.Labels[RegionLabel]
		l, _ := p.globalLiveness(id)
		switch {
		case want != nil && !want[region]:
			why["in other regions"]++
		case h.Admin != dbpb.HostAdmin_HOST_ADMIN_ACTIVE:
			why[strings.ToLower(strings.TrimPrefix(h.Admin.String(), "HOST_ADMIN_"))]++
		case p.inMaintenance(h):
			why["in maintenance"]++
		case l != Up:
			why[l.String()]++
		case !p.heard(id):
			why["not heard from recently"]++
		case !slices.Contains(h.Apps, sh.App):
			why["without app "+sh.App]++
		case used[id] || used["addr:"+h.RaftAddress]:
			why["already holding a replica"]++
		case forRepair && p.inFlightPerHost[id] >= int(p.cfg.MaxRepairsPerHost):
			why["at the per-host repair limit"]++
		default:
			key := ""
			if want != nil {
				key = region
			}
			if perRegion[key] >= maxCandidates {
				return true
			}
			out = append(out, h)
			if perRegion[key]++; perRegion[key] == maxCandidates {
				full++
			}
			goal := 1
			if want != nil {
				goal = len(want)
			}
			return full < goal
		}
		return true
	})
	return out, why
}

// loadIndex is this round's copy of the DB's load index (taken once).
func (p *planner) loadIndex() db.LoadIndex {
	if p.loads == nil {
		x := p.st.LoadIndex()
		p.loads = &x
	}
	return *p.loads
}

// addLoad counts a replica planned on a host this round.
func (p *planner) addLoad(id string) {
	old := p.load(id)
	p.added[id]++
	p.loadIndex().Move(id, old, old+1)
}

// desiredRegions returns the shard's region placement and whether it is
// exact (counts add up to the replica count).
func (p *planner) desiredRegions(sh *dbpb.Shard) (map[string]uint32, bool) {
	if len(sh.Regions) > 0 {
		return sh.Regions, true
	}
	if len(p.st.Regions) == 0 {
		return nil, false
	}
	var total uint32
	for _, n := range p.st.Regions {
		total += n
	}
	return p.st.Regions, total == sh.Replicas
}

// better orders candidate hosts: fewer replicas of this shard in the
// host's region (spread), then fewer replicas overall (least loaded), then
// a seeded random tie-break.
type scored struct {
	h      *dbpb.Host
	spread int
	load   int
	tie    uint64
}

func (p *planner) best(cands []*dbpb.Host, regionCount map[string]int) *dbpb.Host {
	var b scored
	for i, h := range cands {
		s := scored{h: h, spread: regionCount[h.Labels[RegionLabel]], load: p.load(h.Id), tie: p.rng.Uint64()}
		if i == 0 || s.spread < b.spread || (s.spread == b.spread && (s.load < b.load || (s.load == b.load && s.tie < b.tie))) {
			b = s
		}
	}
	return b.h
}

// pickHost chooses the host for a new replica of v's shard, replacing
// `replaced` (nil when adding). It explains and returns "" when none fits.
func (p *planner) pickHost(v *shardView, replaced *member) string {
	return p.pickHostIn(v, replaced, "")
}

// pickHostIn is pickHost restricted to one region when region is not "".
func (p *planner) pickHostIn(v *shardView, replaced *member, region string) string {
	sh := v.sh
	regions, exact := p.desiredRegions(sh)
	count := map[string]int{}
	for _, m := range v.members {
		if replaced != nil && m.rec.ReplicaId == replaced.rec.ReplicaId {
			continue
		}
		if m.host != nil {
			count[m.host.Labels[RegionLabel]]++
		}
	}
	var want map[string]bool
	if len(regions) > 0 {
		want = map[string]bool{}
		for r, n := range regions {
			if exact && count[r] < int(n) {
				want[r] = true
			}
		}
		if len(want) == 0 {
			for r := range regions {
				want[r] = true
			}
		}
	}
	if region != "" {
		want = map[string]bool{region: true}
	}
	cands, why := p.eligible(sh, true, want)
	if v.ms != nil {
		// dragonboat refuses a target any member of the membership uses,
		// also one whose host record is gone (removed by the operator) and
		// whose address a new host identity took.
		taken := map[string]bool{}
		for _, m := range []map[uint64]string{v.ms.Voters, v.ms.NonVoting} {
			for _, a := range m {
				taken[a] = true
			}
		}
		cands = slices.DeleteFunc(cands, func(h *dbpb.Host) bool {
			if taken[h.RaftAddress] {
				why["already holding a replica"]++
				return true
			}
			return false
		})
	}
	if len(cands) == 0 && want != nil {
		v.say("no eligible host: needs region %s, none available (hosts: %s)", strings.Join(slices.Sorted(maps.Keys(want)), " or "), why)
		return ""
	}
	h := p.best(cands, count)
	if h == nil {
		v.say("no eligible host for a new replica (hosts: %s)", why)
		return ""
	}
	return h.Id
}

func (e exclusion) withOthers(n int, what string) exclusion {
	c := maps.Clone(e)
	if n > 0 {
		c[what] += n
	}
	return c
}

// place chooses hosts for a pending shard's initial replicas.
func (p *planner) place(v *shardView) {
	sh := v.sh
	if p.placements >= p.lim.MaxPlacements {
		v.say("waiting: placement queued for the next round")
		p.out.Again = append(p.out.Again, sh.Id)
		p.out.Placing = true
		return
	}
	regions, exact := p.desiredRegions(sh)
	var want map[string]bool
	if len(regions) > 0 {
		want = map[string]bool{}
		for r := range regions {
			want[r] = true
		}
	}
	cands, why := p.eligible(sh, false, want)
	chosen := []string{}
	count := map[string]int{}
	take := func(h *dbpb.Host) {
		chosen = append(chosen, h.Id)
		count[h.Labels[RegionLabel]]++
		cands = slices.DeleteFunc(cands, func(c *dbpb.Host) bool { return c.Id == h.Id || c.RaftAddress == h.RaftAddress })
	}
	if exact {
		for _, r := range slices.Sorted(maps.Keys(regions)) {
			for i := 0; i < int(regions[r]); i++ {
				var in []*dbpb.Host
				for _, h := range cands {
					if h.Labels[RegionLabel] == r {
						in = append(in, h)
					}
				}
				h := p.best(in, count)
				if h == nil {
					v.say("cannot place: needs %d eligible hosts in region %s, found %d (other hosts: %s); will retry",
						regions[r], r, i, why)
					return
				}
				take(h)
			}
		}
	} else {
		for i := 0; i < int(sh.Replicas); i++ {
			h := p.best(cands, count)
			if h == nil {
				v.say("cannot place: needs %d eligible hosts, found %d (other hosts: %s); will retry", sh.Replicas, i, why)
				return
			}
			take(h)
		}
	}
	p.placements++
	p.out.Placing = true
	for _, id := range chosen {
		p.addLoad(id)
	}
	p.decide(&dbpb.Decision{Kind: &dbpb.Decision_PlaceShard{PlaceShard: &dbpb.PlaceShard{ShardId: sh.Id, HostIds: chosen}}})
	v.say("placing replicas on %s", strings.Join(p.addrs(chosen), ", "))
}

func (p *planner) addrs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = p.addr(id)
	}
	return out
}
