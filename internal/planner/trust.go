package planner

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
)

// voterDropRefused says why the DB would refuse a decision that drops
// voter records (db.VoterDropAllowed), or "" when it would not. The planner
// checks it before proposing, so it never proposes what the DB refuses;
// the DB checks again whatever the planner believed it observed.
func (p *planner) voterDropRefused(v *shardView, d *dbpb.Decision) string {
	sh := v.sh
	var drop uint64
	after := sh
	switch k := d.Kind.(type) {
	case *dbpb.Decision_StartRepair:
		switch k.StartRepair.Kind {
		case dbpb.RepairKind_REPAIR_KIND_REMOVE:
			drop = k.StartRepair.OldReplicaId
		case dbpb.RepairKind_REPAIR_KIND_REPLACE, dbpb.RepairKind_REPAIR_KIND_MOVE, dbpb.RepairKind_REPAIR_KIND_BALANCE:
			// The old replica is dropped at the end, after the new one
			// became a voter: started only if that end is allowed.
			drop = k.StartRepair.OldReplicaId
			after = &dbpb.Shard{Id: sh.Id, Replicas: sh.Replicas,
				Members: append(sh.Members[:len(sh.Members):len(sh.Members)], &dbpb.Replica{Role: dbpb.Role_ROLE_VOTER})}
		}
	case *dbpb.Decision_FinishRepair:
		r := sh.Repair
		if r == nil {
			return ""
		}
		if k.FinishRepair.Outcome == dbpb.RepairOutcome_REPAIR_OUTCOME_DONE {
			drop = r.OldReplicaId
		} else {
			drop = r.NewReplicaId
		}
	}
	if drop == 0 || db.VoterDropAllowed(after, drop) {
		return ""
	}
	return fmt.Sprintf("dropping voter %d would leave fewer recorded voters than a quorum of %d replicas", drop, sh.Replicas)
}

// Membership claims.
//
// A report's membership is a claim, not a fact: a host with a valid
// certificate can send anything for its own identity. Every member's agent
// reports the membership its replica reads, with its own ConfigChangeID,
// leader and voters. The planner believes a claim only
//   - from a replica the DB records as a member of the shard on the
//     reporting host, naming at least one recorded replica, well formed;
//   - if no live recorded member contradicts it: none has applied a later
//     ConfigChangeID (the claim is stale), none that the claim leaves out
//     reports its ConfigChangeID (or later) and a leader, none reports other
//     voters at the same ConfigChangeID or still counts a replica the claim
//     lists as removed, and no other member claims a different membership
//     at the same ConfigChangeID;
//   - if it is confirmed by a quorum of its own voters, live recorded
//     members on at least two hosts (unless the shard has one replica),
//     reporting its ConfigChangeID or later and not counting a member it
//     drops as a voter. One host alone can therefore never make the planner
//     forget a voter, delete a member's data or promote a replica.
// Untrusted claims are ignored: the shard keeps the DB's membership, plans
// no new repair while its members' claims cannot be believed, and its
// explanation says why.

// Claim is a membership as one host reported it.
type Claim struct {
	// ReplicaID is the replica whose report carried it; 0 when unknown
	// (an order result).
	ReplicaID uint64
	M         *drummerpb.Membership
}

// HostClaims are one host's claims about one shard: the newest it sent
// (NewerMembership) and the latest it sent, so a host's later, lower claim
// is still seen after a bad newer one.
type HostClaims struct {
	Newest, Latest Claim
}

// AddClaim records a membership reported by hostID (from its replica
// replicaID, 0 if unknown) for a shard, and keeps Memberships (the newest
// claim of any host, unchecked) up to date. It reports whether anything
// changed, i.e. whether the shard needs planning again.
func (o *Observed) AddClaim(shardID uint64, hostID string, replicaID uint64, m *drummerpb.Membership) bool {
	if m == nil {
		return false
	}
	changed := false
	if NewerMembership(m, o.Memberships[shardID]) {
		o.Memberships[shardID] = m
		changed = true
	}
	if o.Claims == nil {
		o.Claims = map[uint64]map[string]*HostClaims{}
	}
	hs := o.Claims[shardID]
	if hs == nil {
		hs = map[string]*HostClaims{}
		o.Claims[shardID] = hs
	}
	hc := hs[hostID]
	if hc == nil {
		hc = &HostClaims{}
		hs[hostID] = hc
	}
	c := Claim{ReplicaID: replicaID, M: m}
	if hc.Latest.M == nil || hc.Latest.ReplicaID != replicaID || !EqualMembership(hc.Latest.M, m) {
		hc.Latest = c
		changed = true
	}
	if NewerMembership(m, hc.Newest.M) {
		hc.Newest = c
		changed = true
	}
	return changed
}

// pruneClaims drops the claims of shards st no longer has and of hosts o
// no longer knows.
func pruneClaims(o *Observed, st *db.State) {
	for id, hs := range o.Claims {
		if _, ok := st.Shards.Lookup(id); !ok {
			delete(o.Claims, id)
			continue
		}
		for h := range hs {
			if _, ok := o.Hosts[h]; !ok {
				delete(hs, h)
			}
		}
		if len(hs) == 0 {
			delete(o.Claims, id)
		}
	}
}

type sourcedClaim struct {
	Claim
	from *member
}

// trustedMembership returns the newest membership claim of the shard that
// passes the trust rules, or nil (the shard then keeps the DB's
// membership). It costs O(members × claims of the shard).
func (p *planner) trustedMembership(v *shardView) *drummerpb.Membership {
	claims := p.obs.Claims[v.sh.Id]
	if len(claims) == 0 {
		return nil
	}
	var cands []sourcedClaim
	for _, m := range v.members {
		hc := claims[m.rec.HostId]
		if hc == nil {
			continue
		}
		for i, c := range []Claim{hc.Newest, hc.Latest} {
			if c.M == nil || (i == 1 && c.M == hc.Newest.M) {
				continue
			}
			if c.ReplicaID != 0 && c.ReplicaID != m.rec.ReplicaId {
				continue // from an older replica of the shard on that host
			}
			cands = append(cands, sourcedClaim{c, m})
		}
	}
	strangers := 0
	for h := range claims {
		if db.MemberOnHost(v.sh, h) == nil {
			strangers++
		}
	}
	slices.SortStableFunc(cands, func(a, b sourcedClaim) int {
		switch {
		case NewerMembership(a.M, b.M):
			return -1
		case NewerMembership(b.M, a.M):
			return 1
		}
		return cmp.Compare(a.from.rec.ReplicaId, b.from.rec.ReplicaId)
	})
	var chosen *drummerpb.Membership
	for _, c := range cands {
		why := p.distrust(v, c.M)
		if why == "" {
			for _, o := range cands {
				if o.M != c.M && o.M.ConfigChangeId == c.M.ConfigChangeId && !sameMembership(o.M, c.M) {
					why = fmt.Sprintf("replica %d on %s claims a different membership at the same ConfigChangeID",
						o.from.rec.ReplicaId, p.addr(o.from.rec.HostId))
					break
				}
			}
		}
		if why != "" {
			v.say("ignoring the membership claimed by replica %d on %s (ConfigChangeID %d): %s",
				c.from.rec.ReplicaId, p.addr(c.from.rec.HostId), c.M.ConfigChangeId, why)
			continue
		}
		chosen = c.M
		break
	}
	v.distrusted = chosen == nil && len(cands) > 0
	if strangers > 0 && chosen == nil {
		v.say("ignoring membership claims from %d hosts that hold no member of the shard", strangers)
	}
	return chosen
}

// distrust says why a membership claim is not believed, or "".
func (p *planner) distrust(v *shardView, ms *drummerpb.Membership) string {
	cci := ms.ConfigChangeId
	if len(ms.Voters) == 0 {
		return "it has no voters"
	}
	for _, id := range ms.Removed {
		_, inV := ms.Voters[id]
		_, inN := ms.NonVoting[id]
		_, inW := ms.Witnesses[id]
		if inV || inN || inW {
			return fmt.Sprintf("it lists replica %d both as a member and as removed", id)
		}
	}
	if !sharesMember(v, ms) {
		// Every true voter is recorded (a member is dropped only after
		// its removal is observed), so a membership without any recorded
		// replica belongs to an earlier incarnation of this shard ID
		// (deleted and created again), or is made up.
		return "it names no recorded replica"
	}
	for _, m := range v.members {
		if !m.live() {
			continue
		}
		id := m.rec.ReplicaId
		_, inV := ms.Voters[id]
		_, inN := ms.NonVoting[id]
		if m.obs.ConfigChangeId > cci {
			// A newer membership exists: this one is stale (or made up).
			return fmt.Sprintf("replica %d on %s has applied a later ConfigChangeID (%d)", id, p.addr(m.rec.HostId), m.obs.ConfigChangeId)
		}
		if !inV && !inN && m.obs.ConfigChangeId >= cci && m.obs.LeaderId != 0 {
			return fmt.Sprintf("it leaves out replica %d on %s, which reports ConfigChangeID %d and a leader",
				id, p.addr(m.rec.HostId), m.obs.ConfigChangeId)
		}
		if len(m.obs.Voters) == 0 || m.obs.ConfigChangeId < cci {
			continue
		}
		if m.obs.ConfigChangeId == cci && !sameVoters(m.obs.Voters, ms.Voters) {
			return fmt.Sprintf("replica %d on %s reports other voters %v at the same ConfigChangeID",
				id, p.addr(m.rec.HostId), m.obs.Voters)
		}
		for _, r := range ms.Removed {
			if slices.Contains(m.obs.Voters, r) {
				// Removed IDs never come back.
				return fmt.Sprintf("replica %d on %s still counts replica %d, which it lists as removed, as a voter at ConfigChangeID %d",
					id, p.addr(m.rec.HostId), r, m.obs.ConfigChangeId)
			}
		}
	}
	var dropped []uint64
	for _, m := range v.members {
		id := m.rec.ReplicaId
		_, inV := ms.Voters[id]
		_, inN := ms.NonVoting[id]
		// A recorded member the claim leaves out or lists as removed:
		// believing it may drop the member's record (and its data).
		if (!inV && !inN) || slices.Contains(ms.Removed, id) {
			dropped = append(dropped, id)
		}
	}
	// Every claim, and above all one that drops a member, must be
	// confirmed by a quorum of its own voters that have applied it: live
	// recorded members on two hosts or more (one host can lie about all
	// of its reports). A claim the DB's membership already agrees with
	// needs no more than that either: in a healthy shard the voters report
	// the claim's ConfigChangeID within a report interval.
	need := db.Quorum(len(ms.Voters))
	got, hosts := 0, map[string]bool{}
	for _, m := range v.members {
		if _, ok := ms.Voters[m.rec.ReplicaId]; !ok || !m.live() || m.obs.ConfigChangeId < cci {
			continue
		}
		if slices.ContainsFunc(dropped, func(id uint64) bool { return slices.Contains(m.obs.Voters, id) }) {
			continue
		}
		got++
		hosts[m.rec.HostId] = true
	}
	// A one-replica shard has voters on two hosts only while it moves,
	// and its old voter's removal is confirmed by the new replica's host
	// alone, so believing a claim that drops a recorded voter also needs
	// that voter's own host to have reported carrying out its removal
	// (the planner orders it from there: remove).
	if got >= need && len(hosts) >= 2 {
		return ""
	}
	if got >= need && v.sh.Replicas <= 1 {
		for _, id := range dropped {
			if m := v.byID[id]; m != nil && m.rec.Role == dbpb.Role_ROLE_VOTER && !p.removedItself(v.sh.Id, m) {
				return fmt.Sprintf("it drops voter %d of a one-replica shard, and only that replica's host (%s) can confirm its removal, which it has not reported",
					id, p.addr(m.rec.HostId))
			}
		}
		return ""
	}
	what := "it is confirmed"
	if len(dropped) > 0 {
		what = fmt.Sprintf("it drops recorded replicas %v, but is confirmed", dropped)
	}
	return fmt.Sprintf("%s by only %d of its %d voters (on %d hosts) live and reporting ConfigChangeID %d or later; %d needed, on 2 hosts or more",
		what, got, len(ms.Voters), len(hosts), cci, need)
}

// removedItself tells whether m's host reported carrying out the removal
// of m from its shard (a done membership change order).
func (p *planner) removedItself(shardID uint64, m *member) bool {
	o := p.obs.Hosts[m.rec.HostId]
	if o == nil {
		return false
	}
	for id, r := range o.Results {
		if r.Outcome != drummerpb.OrderOutcome_ORDER_OUTCOME_DONE || r.ShardId != shardID {
			continue
		}
		if typ, rid, ok := ccOrderOf(id); ok && typ == drummerpb.ConfigChangeType_CONFIG_CHANGE_TYPE_REMOVE && rid == m.rec.ReplicaId {
			return true
		}
	}
	return false
}

func sharesMember(v *shardView, ms *drummerpb.Membership) bool {
	for _, set := range []map[uint64]string{ms.Voters, ms.NonVoting} {
		for id := range set {
			if v.byID[id] != nil {
				return true
			}
		}
	}
	return false
}

func sameMembership(a, b *drummerpb.Membership) bool {
	sameKeys := func(x, y map[uint64]string) bool {
		if len(x) != len(y) {
			return false
		}
		for k := range x {
			if _, ok := y[k]; !ok {
				return false
			}
		}
		return true
	}
	ra, rb := slices.Sorted(slices.Values(a.Removed)), slices.Sorted(slices.Values(b.Removed))
	return sameKeys(a.Voters, b.Voters) && sameKeys(a.NonVoting, b.NonVoting) && sameKeys(a.Witnesses, b.Witnesses) && slices.Equal(ra, rb)
}

func sameVoters(ids []uint64, voters map[uint64]string) bool {
	if len(ids) != len(voters) {
		return false
	}
	for _, id := range ids {
		if _, ok := voters[id]; !ok {
			return false
		}
	}
	return true
}
