package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
)

// clusterView is what the checker sees at one moment: the scheduler
// leader's shards, hosts and repairs, every nodehost's replicas (from the
// Monkey service) and every drummer server's status.
type clusterView struct {
	Shards   []*drummerpb.ShardStatus
	Hosts    []*drummerpb.HostStatus
	Repairs  *drummerpb.ListRepairsResponse
	Replicas []*drummerpb.GetReplicaStatesResponse // per nodehost (nil: no answer)
	Servers  []*drummerpb.ServerStatus             // per drummer (nil: no answer)
	Errors   []string
}

func (h *harness) view(ctx context.Context) *clusterView {
	v := &clusterView{
		Replicas: make([]*drummerpb.GetReplicaStatesResponse, len(h.monkeys)),
		Servers:  make([]*drummerpb.ServerStatus, len(h.drummers)),
	}
	var mu sync.Mutex
	addErr := func(format string, args ...any) {
		mu.Lock()
		v.Errors = append(v.Errors, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	var wg sync.WaitGroup
	call := func(f func(ctx context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			f(cctx)
		}()
	}
	call(func(ctx context.Context) {
		if r, err := h.api.ListShards(ctx, &drummerpb.ListShardsRequest{}); err != nil {
			addErr("ListShards: %v", err)
		} else {
			v.Shards = r.Shards
		}
	})
	call(func(ctx context.Context) {
		if r, err := h.api.ListHosts(ctx, &drummerpb.ListHostsRequest{}); err != nil {
			addErr("ListHosts: %v", err)
		} else {
			v.Hosts = r.Hosts
		}
	})
	call(func(ctx context.Context) {
		if r, err := h.api.ListRepairs(ctx, &drummerpb.ListRepairsRequest{}); err != nil {
			addErr("ListRepairs: %v", err)
		} else {
			v.Repairs = r
		}
	})
	for i, m := range h.monkeys {
		call(func(ctx context.Context) {
			if r, err := m.GetReplicaStates(ctx, &drummerpb.GetReplicaStatesRequest{}); err != nil {
				addErr("%s GetReplicaStates: %v", h.cl.Nodehosts[i].Name, err)
			} else {
				v.Replicas[i] = r
			}
		})
	}
	for i, d := range h.drummers {
		call(func(ctx context.Context) {
			if r, err := d.GetServerStatus(ctx, &drummerpb.GetServerStatusRequest{}); err != nil {
				addErr("%s GetServerStatus: %v", h.cl.Drummers[i].Name, err)
			} else {
				v.Servers[i] = r
			}
		})
	}
	wg.Wait()
	sort.Strings(v.Errors)
	return v
}

// controlProblems checks the control plane's picture against the
// nodehosts: every shard healthy with its desired replica count, no repair
// in flight, every member on a current, up host identity and running
// there, and no replica running that is not a member (zombie).
func (v *clusterView) controlProblems(names []string) []string {
	var out []string
	out = append(out, v.Errors...)
	if v.Shards == nil || v.Hosts == nil || v.Repairs == nil {
		return out
	}
	hostState := map[string]*drummerpb.HostStatus{}
	for _, hs := range v.Hosts {
		hostState[hs.Id] = hs
	}
	// Current identities of the nodehost processes.
	running := map[string]map[[2]uint64]bool{} // host id -> (shard, replica)
	nameOf := map[string]string{}
	for i, r := range v.Replicas {
		if r == nil {
			continue
		}
		id := r.State.GetHostId()
		nameOf[id] = names[i]
		set := map[[2]uint64]bool{}
		for _, rs := range r.Replicas {
			set[[2]uint64{rs.ShardId, rs.ReplicaId}] = true
		}
		running[id] = set
		if hs := hostState[id]; hs == nil {
			out = append(out, fmt.Sprintf("%s (host %s) is not registered", names[i], id))
		} else if hs.State != "up" {
			out = append(out, fmt.Sprintf("%s (host %s) is %s", names[i], id, hs.State))
		}
	}
	members := map[[2]uint64]string{} // (shard, replica) -> host id
	for _, s := range v.Shards {
		var bad []string
		if s.Health != "healthy" {
			bad = append(bad, s.Health)
		}
		if int(s.ReplicasDesired) != len(s.Members) {
			bad = append(bad, fmt.Sprintf("%d members, want %d", len(s.Members), s.ReplicasDesired))
		}
		if s.Repair != nil {
			bad = append(bad, fmt.Sprintf("repair %d (%s) at %s", s.Repair.Id, s.Repair.Kind, s.Repair.Step))
		}
		for _, m := range s.Members {
			members[[2]uint64{s.ShardId, m.ReplicaId}] = m.HostId
			if m.State != "live" || m.Role != "voter" {
				bad = append(bad, fmt.Sprintf("replica %d %s %s", m.ReplicaId, m.Role, m.State))
			}
			hs := hostState[m.HostId]
			switch {
			case hs == nil:
				bad = append(bad, fmt.Sprintf("replica %d on unknown (removed) host %s", m.ReplicaId, m.HostId))
			case hs.AdminState == "replaced":
				bad = append(bad, fmt.Sprintf("replica %d on replaced host %s", m.ReplicaId, m.HostId))
			case running[m.HostId] == nil:
				bad = append(bad, fmt.Sprintf("replica %d on host %s, which is not a current nodehost identity", m.ReplicaId, m.HostId))
			case !running[m.HostId][[2]uint64{s.ShardId, m.ReplicaId}]:
				bad = append(bad, fmt.Sprintf("replica %d is not running on %s", m.ReplicaId, nameOf[m.HostId]))
			}
		}
		if len(bad) > 0 {
			out = append(out, fmt.Sprintf("shard %d: %s", s.ShardId, strings.Join(bad, "; ")))
		}
	}
	for id, set := range running {
		for k := range set {
			if hid, ok := members[k]; !ok || hid != id {
				out = append(out, fmt.Sprintf("zombie: shard %d replica %d runs on %s but is not a member there", k[0], k[1], nameOf[id]))
			}
		}
	}
	for _, r := range v.Repairs.InFlight {
		out = append(out, fmt.Sprintf("repair %d of shard %d in flight (%s, step %s)", r.Id, r.ShardId, r.Kind, r.Step))
	}
	sort.Strings(out)
	return out
}

// replicaProblems checks that the replicas of every shard agree: equal
// last-applied index and equal state machine, session and membership
// hashes.
func (v *clusterView) replicaProblems(names []string) []string {
	type rep struct {
		name string
		rs   *drummerpb.ReplicaState
	}
	byShard := map[uint64][]rep{}
	for i, r := range v.Replicas {
		if r == nil {
			continue
		}
		for _, rs := range r.Replicas {
			byShard[rs.ShardId] = append(byShard[rs.ShardId], rep{names[i], rs})
		}
	}
	var out []string
	for _, id := range slices.Sorted(func(yield func(uint64) bool) {
		for k := range byShard {
			if !yield(k) {
				return
			}
		}
	}) {
		rs := byShard[id]
		var desc []string
		same := true
		for _, r := range rs {
			x := r.rs
			desc = append(desc, fmt.Sprintf("%s/r%d applied %d sm %016x sess %016x memb %016x%s",
				r.name, x.ReplicaId, x.LastApplied, x.StateMachineHash, x.SessionHash, x.MembershipHash, errSuffix(x.Error)))
			y := rs[0].rs
			if x.Error != "" || x.LastApplied != y.LastApplied || x.StateMachineHash != y.StateMachineHash ||
				x.SessionHash != y.SessionHash || x.MembershipHash != y.MembershipHash {
				same = false
			}
		}
		if !same {
			out = append(out, fmt.Sprintf("shard %d replicas differ: %s", id, strings.Join(desc, ", ")))
		}
	}
	return out
}

// divergedShards returns the shards whose replicas all report the same
// last-applied index but different hashes.
func (v *clusterView) divergedShards(names []string) map[uint64]string {
	type rep struct {
		name string
		rs   *drummerpb.ReplicaState
	}
	byShard := map[uint64][]rep{}
	for i, r := range v.Replicas {
		for _, rs := range r.GetReplicas() {
			byShard[rs.ShardId] = append(byShard[rs.ShardId], rep{names[i], rs})
		}
	}
	out := map[uint64]string{}
	for id, rs := range byShard {
		if len(rs) < 2 {
			continue
		}
		y := rs[0].rs
		sameIndex, sameHash := true, true
		for _, r := range rs {
			x := r.rs
			if x.Error != "" || x.LastApplied != y.LastApplied {
				sameIndex = false
			}
			if x.StateMachineHash != y.StateMachineHash || x.SessionHash != y.SessionHash || x.MembershipHash != y.MembershipHash {
				sameHash = false
			}
		}
		if sameIndex && !sameHash {
			var d []string
			for _, r := range rs {
				x := r.rs
				d = append(d, fmt.Sprintf("%s/r%d sm %016x sess %016x memb %016x", r.name, x.ReplicaId, x.StateMachineHash, x.SessionHash, x.MembershipHash))
			}
			out[id] = fmt.Sprintf("shard %d at applied index %d: %s", id, y.LastApplied, strings.Join(d, ", "))
		}
	}
	return out
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " (" + e + ")"
}

// dbProblems checks the drummer DB: every server answers, one holds the
// scheduler, and all have the same hash at the same applied index.
func (v *clusterView) dbProblems(names []string) []string {
	var out []string
	schedulers := 0
	var first *drummerpb.ServerStatus
	for i, s := range v.Servers {
		if s == nil {
			out = append(out, fmt.Sprintf("%s does not answer", names[i]))
			continue
		}
		if s.Scheduler {
			schedulers++
		}
		if s.Removed {
			out = append(out, fmt.Sprintf("%s was removed", names[i]))
		}
		if first == nil {
			first = s
		} else if s.DbAppliedIndex != first.DbAppliedIndex || s.DbHash != first.DbHash {
			out = append(out, fmt.Sprintf("drummer DB differs: %s", dbDesc(v.Servers, names)))
			break
		}
	}
	if schedulers != 1 {
		out = append(out, fmt.Sprintf("%d drummer servers hold the scheduler", schedulers))
	}
	return out
}

func dbDesc(ss []*drummerpb.ServerStatus, names []string) string {
	var d []string
	for i, s := range ss {
		if s != nil {
			d = append(d, fmt.Sprintf("%s applied %d hash %016x", names[i], s.DbAppliedIndex, s.DbHash))
		}
	}
	return strings.Join(d, ", ")
}

// dbDivergence remembers every (applied index, hash) a server reported
// and returns a problem if two servers ever reported different hashes at
// the same index.
type dbDivergence struct {
	seen map[uint64]map[uint64]string // index -> hash -> server
}

func (d *dbDivergence) add(v *clusterView, names []string) string {
	if d.seen == nil {
		d.seen = map[uint64]map[uint64]string{}
	}
	for i, s := range v.Servers {
		if s == nil {
			continue
		}
		m := d.seen[s.DbAppliedIndex]
		if m == nil {
			m = map[uint64]string{}
			d.seen[s.DbAppliedIndex] = m
		}
		m[s.DbHash] = names[i]
		if len(m) > 1 {
			var d []string
			for h, n := range m {
				d = append(d, fmt.Sprintf("%s: %016x", n, h))
			}
			sort.Strings(d)
			return fmt.Sprintf("drummer DB replicas diverged at applied index %d: %s", s.DbAppliedIndex, strings.Join(d, ", "))
		}
	}
	return ""
}

func (h *harness) names() (nodehosts, drummers []string) {
	for _, n := range h.cl.Nodehosts {
		nodehosts = append(nodehosts, n.Name)
	}
	for _, n := range h.cl.Drummers {
		drummers = append(drummers, n.Name)
	}
	return nodehosts, drummers
}

// converge waits (within cfg.ConvergeTimeout of healStart) until the
// control plane is healthy, probes every shard with a write and a read,
// then waits until the replicas and the drummer DB agree. It records
// failures in the report.
func (h *harness) converge(ctx context.Context, healStart time.Time) {
	rep := h.rep
	deadline := healStart.Add(h.cfg.ConvergeTimeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	nhNames, drNames := h.names()
	var div dbDivergence
	var last []string
	var v *clusterView
	lastLog := time.Now()
	progress := func(probs []string) {
		if time.Since(lastLog) >= 15*time.Second {
			lastLog = time.Now()
			h.logf("converging for %s: %d problems, e.g. %s", time.Since(healStart).Round(time.Second), len(probs), strings.Join(first(probs, 3), " | "))
		}
	}
	defer func() {
		if v != nil {
			writeView(filepath.Join(h.cfg.Dir, "final-state.json"), v)
		}
	}()
	for {
		v = h.view(dctx)
		if msg := div.add(v, drNames); msg != "" {
			rep.fail("%s", msg)
			return
		}
		last = v.controlProblems(nhNames)
		if len(last) == 0 {
			break
		}
		progress(last)
		if !sleepCtx(dctx, time.Second) {
			rep.fail("not converged within %s of healing: %d problems, first: %s", h.cfg.ConvergeTimeout, len(last), strings.Join(first(last, 15), " | "))
			return
		}
	}
	rep.TimeToHealthy = time.Since(healStart)
	h.logf("control plane converged %s after healing", rep.TimeToHealthy.Round(time.Millisecond))

	if probs := h.probe(dctx); len(probs) > 0 {
		rep.fail("shards failing a write and a read: %s", strings.Join(first(probs, 10), " | "))
	}

	diverged := map[uint64]int{} // shard -> consecutive polls diverged at an equal applied index
	for {
		v = h.view(dctx)
		if msg := div.add(v, drNames); msg != "" {
			rep.fail("%s", msg)
			return
		}
		// Replicas that stay at the same applied index with different
		// hashes for several polls (nothing is written any more) have
		// diverged for good: fail now rather than at the deadline.
		ds := v.divergedShards(nhNames)
		for shard, msg := range ds {
			if diverged[shard]++; diverged[shard] >= 5 {
				rep.fail("replicas diverged: %s", msg)
				return
			}
		}
		for shard := range diverged {
			if _, still := ds[shard]; !still {
				delete(diverged, shard)
			}
		}
		last = append(v.controlProblems(nhNames), v.replicaProblems(nhNames)...)
		last = append(last, v.dbProblems(drNames)...)
		if len(last) == 0 {
			break
		}
		progress(last)
		if !sleepCtx(dctx, time.Second) {
			rep.fail("replicas not consistent within %s of healing: %d problems, first: %s", h.cfg.ConvergeTimeout, len(last), strings.Join(first(last, 15), " | "))
			return
		}
	}
	rep.TimeToConsistent = time.Since(healStart)
	for _, r := range v.Replicas {
		rep.ReplicasChecked += len(r.GetReplicas())
	}
	rep.DBAppliedIndex = v.Servers[0].GetDbAppliedIndex()
	h.logf("replicas and drummer DB consistent %s after healing (%d replicas, DB at index %d)",
		rep.TimeToConsistent.Round(time.Millisecond), rep.ReplicasChecked, rep.DBAppliedIndex)
}

// probe writes a unique value to every shard and reads it back.
func (h *harness) probe(ctx context.Context) []string {
	c, err := client.New(ctx, client.Config{Endpoints: []string{h.cl.Endpoints}, Security: h.cl.Security("app")})
	if err != nil {
		return []string{err.Error()}
	}
	defer c.Close()
	var mu sync.Mutex
	var probs []string
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	stamp := fmt.Sprint(time.Now().UnixNano())
	for id := uint64(1); id <= uint64(h.cfg.Shards); id++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var last error
			for try := 0; try < 5; try++ {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				val := []byte(fmt.Sprintf("probe-%s-%d", stamp, try))
				err := c.KV(id).Put(pctx, []byte("probe"), val)
				if err == nil {
					var got []byte
					var found bool
					got, found, err = c.KV(id).Get(pctx, []byte("probe"))
					if err == nil && (!found || string(got) != string(val)) {
						err = fmt.Errorf("read %q (found %v) after writing %q", got, found, val)
						cancel()
						last = err
						break
					}
				}
				cancel()
				if err == nil {
					return
				}
				last = err
				if !sleepCtx(ctx, time.Second) {
					break
				}
			}
			mu.Lock()
			probs = append(probs, fmt.Sprintf("shard %d: %v", id, last))
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Strings(probs)
	return probs
}

func writeView(path string, v *clusterView) {
	m := protojson.MarshalOptions{Indent: "  "}
	msg := func(p proto.Message) json.RawMessage {
		if p == nil || !p.ProtoReflect().IsValid() {
			return json.RawMessage("null")
		}
		b, err := m.Marshal(p)
		if err != nil {
			return json.RawMessage(fmt.Sprintf("%q", err.Error()))
		}
		return b
	}
	out := map[string]any{"errors": v.Errors}
	var shards, hosts, replicas, servers []json.RawMessage
	for _, s := range v.Shards {
		shards = append(shards, msg(s))
	}
	for _, x := range v.Hosts {
		hosts = append(hosts, msg(x))
	}
	for _, x := range v.Replicas {
		replicas = append(replicas, msg(x))
	}
	for _, x := range v.Servers {
		servers = append(servers, msg(x))
	}
	out["shards"], out["hosts"], out["replicas"], out["servers"] = shards, hosts, replicas, servers
	if v.Repairs != nil {
		out["repairs"] = msg(v.Repairs)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err == nil {
		_ = os.WriteFile(path, b, 0o644)
	}
}
