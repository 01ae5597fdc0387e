package sim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/dbpb"
	"github.com/drummerhq/drummer/internal/planner"
	"github.com/drummerhq/drummer/internal/scheduler"
)

// drummer is the scheduler: the real scheduler.Node (the server drives
// the same type), the report sessions, and the board of orders in force
// that report replies carry, as the server publishes it after each round.
type drummer struct {
	node  *scheduler.Node
	ses   scheduler.Sessions
	epoch uint64
	board map[string][]sentOrder
}

// sentOrder is an order in force, with the planning round that issued it.
type sentOrder struct {
	host      string
	o         *drummerpb.Order
	decidedAt time.Time
}

func (w *World) newDrummer() *drummer {
	cfg := scheduler.Config{Started: w.now, Salt: w.rng.Uint64(), Tick: w.cfg.PlanEvery, Sweep: w.cfg.SweepEvery}
	if w.cfg.Seed%2 == 0 {
		// Half the seeds run a slow patrol, so that liveness timers, dirty
		// sets and the repairing-shard cadence must carry the work alone.
		cfg.PatrolPerSecond = 1
	}
	return &drummer{node: scheduler.New(cfg), board: map[string][]sentOrder{}}
}

// resetScheduler makes the node the scheduler of a new epoch: the orders
// in force of the previous one are forgotten.
func (d *drummer) resetScheduler(epoch uint64) {
	d.epoch = epoch
	d.node.Become(epoch)
	d.board = map[string][]sentOrder{}
}

// ordersFor lists the orders in force for a host.
func (d *drummer) ordersFor(hostID string) []sentOrder { return d.board[hostID] }

// publish refreshes the board for the hosts whose orders changed, keeping
// when each order was first decided.
func (d *drummer) publish(hosts []string, now time.Time) {
	for _, h := range hosts {
		prev := map[string]time.Time{}
		for _, so := range d.board[h] {
			prev[so.o.Id] = so.decidedAt
		}
		var sos []sentOrder
		for _, o := range d.node.OrdersFor(h) {
			at, ok := prev[o.Id]
			if !ok {
				at = now
			}
			sos = append(sos, sentOrder{host: h, o: o, decidedAt: at})
		}
		if len(sos) == 0 {
			delete(d.board, h)
		} else {
			d.board[h] = sos
		}
	}
}

// ---------------------------------------------------------------------------
// Agent reports.

func (w *World) drummerUp() bool { return !w.now.Before(w.downTill) }

func (w *World) reports() {
	for _, h := range w.hosts {
		if !h.alive || w.now.Before(h.nextReport) {
			continue
		}
		h.nextReport = h.nextReport.Add(time.Second)
		if h.nextReport.Before(w.now) {
			h.nextReport = w.now.Add(time.Second)
		}
		w.report(h)
	}
}

func (w *World) buildReport(h *Host) *drummerpb.ReportRequest {
	h.seq++
	req := &drummerpb.ReportRequest{
		HostId: h.id, RaftAddress: h.addr, ApiAddress: h.api,
		Labels: map[string]string{planner.RegionLabel: h.region}, Apps: h.apps,
		Session: h.session, Seq: h.seq, Full: true, EpochSeen: h.epochSeen,
	}
	for _, sid := range sortedKeys(h.running) {
		r := h.running[sid]
		g := r.g
		rr := &drummerpb.ReplicaReport{ShardId: sid, ReplicaId: r.id, App: "kv"}
		if r.initialized && g.isMember(r.id) && g.addrOf(r.id) == h.addr {
			_, voter := g.voters[r.id]
			rr.LeaderId, rr.Term = w.leaderView(g)
			rr.ConfigChangeId = g.ccid
			rr.Voters = slices.Sorted(maps.Keys(g.voters))
			r.lastCCID, r.lastVoter = g.ccid, voter
			if voter {
				rr.Role = drummerpb.ReplicaRole_REPLICA_ROLE_VOTER
			} else {
				rr.Role = drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING
				rr.CaughtUp = r.caughtUp
			}
			// Every member reports the membership (like the agent).
			rr.Membership = g.membership()
		} else {
			// Stranded (not a member here) or not initialized yet: it sees
			// no leader.
			rr.Pending = !r.initialized
			rr.ConfigChangeId = r.lastCCID
			rr.Role = drummerpb.ReplicaRole_REPLICA_ROLE_NON_VOTING
			if r.lastVoter {
				rr.Role = drummerpb.ReplicaRole_REPLICA_ROLE_VOTER
			}
		}
		req.Replicas = append(req.Replicas, rr)
	}
	if !w.now.Before(h.nextDisk) {
		h.nextDisk = w.now.Add(w.dur(w.diskEvery/2, w.diskEvery))
		req.HasDiskInventory = true
		keys := make([]key, 0, len(h.disk))
		for k := range h.disk {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, cmpKey)
		for _, k := range keys {
			req.Disk = append(req.Disk, &drummerpb.ReplicaKey{ShardId: k.ShardID, ReplicaId: k.ReplicaID})
		}
	}
	req.Results = h.results
	if h == w.hostile {
		w.forge(req)
	}
	return req
}

func cmpKey(a, b key) int {
	if a.ShardID != b.ShardID {
		if a.ShardID < b.ShardID {
			return -1
		}
		return 1
	}
	if a.ReplicaID < b.ReplicaID {
		return -1
	}
	if a.ReplicaID > b.ReplicaID {
		return 1
	}
	return 0
}

// report sends one report; the reply carries the orders in force.
func (w *World) report(h *Host) {
	if h.partitioned(w.now) {
		return
	}
	if !w.drummerUp() {
		// A warm successor (a follower) keeps receiving reports.
		if w.warm {
			w.ingest(w.buildReport(h))
			h.results = nil
		}
		// A deposed scheduler that still believes it leads answers with
		// its last orders.
		if w.zombie != nil && w.now.Before(w.zomTill) {
			w.deliver(h, w.zombie.epoch, w.zombie.ordersFor(h.id))
		}
		return
	}
	req := w.buildReport(h)
	w.ingest(req)
	h.results = nil
	w.deliver(h, w.epoch, w.drummer.ordersFor(h.id))
}

// deliver hands orders to the agent, which queues the ones it has not
// executed yet (and retries failed ones).
func (w *World) deliver(h *Host, epoch uint64, orders []sentOrder) {
	if epoch > h.epochSeen {
		h.epochSeen = epoch
	}
	present := map[string]bool{}
	inQueue := map[string]bool{}
	for _, q := range h.queue {
		inQueue[q.o.Id] = true
	}
	for _, so := range orders {
		id := so.o.Id
		present[id] = true
		if inQueue[id] {
			continue
		}
		if out, ok := h.seen[id]; ok && out != failed {
			continue
		}
		delay := w.dur(50*time.Millisecond, 1200*time.Millisecond)
		if w.now.Before(h.slowTill) {
			delay += w.dur(2*time.Second, 40*time.Second)
		}
		h.queue = append(h.queue, &queued{o: so.o, at: w.now.Add(delay), decidedAt: so.decidedAt})
		inQueue[id] = true
		h.seen[id] = drummerpb.OrderOutcome_ORDER_OUTCOME_UNSPECIFIED
	}
	// Forget outcomes of orders no longer in force (bounded memory).
	for id := range h.seen {
		if !present[id] && !inQueue[id] {
			delete(h.seen, id)
		}
	}
}

// ingest hands a report to the scheduler node, as the server's report
// handler and loop do.
func (w *World) ingest(r *drummerpb.ReportRequest) {
	if err := scheduler.ValidateReport(r); err != nil {
		w.violate("simulated agent sent an invalid report: %v", err)
		return
	}
	d := w.drummer
	d.node.Step(r, w.now, d.ses.Check(r))
}

// ---------------------------------------------------------------------------
// Scheduling.

// schedule runs one planning round, as the server's loop does.
func (w *World) schedule() {
	if !w.drummerUp() {
		return
	}
	d := w.drummer
	dbDirty := w.st.TakeDirty()
	w.stats.PlanRounds++
	var before uint64
	check := w.stats.PlanRounds%64 == 1
	if check {
		before = w.st.Hash()
	}
	rd := d.node.Round(w.st, dbDirty, w.now)
	if check && w.st.Hash() != before {
		w.violate("planner modified its input DB state")
	}
	if rd.Output != nil {
		w.checkOutput(rd.Input, rd.Output)
	}
	d.publish(rd.OrderHosts, w.now)
	if !w.now.Before(w.nextSweep) {
		// The verdicts the invariants judge, as the status calls read them.
		w.nextSweep = w.now.Add(w.cfg.SweepEvery)
		w.stats.Sweeps++
		w.lastOut = d.node.Assess(w.st, w.st.SortedShardIDs(), w.now)
		w.lastOutAt = w.now
		w.checkHostGC()
	}
	if len(rd.Decisions) > 0 {
		if !w.settled && w.chance(w.rates.lostProposal) {
			// The proposal timed out (the orders above are in force all the
			// same, as in the server): the next rounds decide again.
			w.tracef("drummer: proposal of %d decisions lost", len(rd.Decisions))
			w.stats.LostProposals++
			d.node.Settle(rd.Decisions, nil, true)
		} else if codes := w.applyDecisions(w.epoch, rd.Decisions); codes != nil {
			d.node.Settle(rd.Decisions, codes, false)
		}
	}
}

// applyDecisions applies a round's decisions as the server's proposal
// would and returns the per-decision codes (nil if the batch was refused).
func (w *World) applyDecisions(epoch uint64, ds []*dbpb.Decision) []byte {
	w.stats.Decisions += len(ds)
	cmd := &dbpb.Command{Version: db.CommandVersion, Epoch: epoch, NowUnixMs: w.now.UnixMilli(),
		Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: ds}}}
	endedRepairs := w.noteRepairs(ds)
	r := w.st.ApplyCommand(cmd)
	if r.Code != dbpb.Code_CODE_OK {
		w.violate("decision batch of %d rejected: %s", len(ds), r.Code)
		return nil
	}
	w.lastBatch, w.lastEpoch = ds, epoch
	for i, dd := range ds {
		ended := endedRepairs[i]
		c := dbpb.Code(r.Data[i])
		name := decisionName(dd)
		w.stats.DecisionCodes[name+":"+strings.TrimPrefix(c.String(), "CODE_")]++
		w.tracef("decide %s -> %s", decisionStr(dd), c)
		w.checkDecisionResult(dd, c)
		if c != dbpb.Code_CODE_OK {
			continue
		}
		w.noteApplied(dd, ended)
		switch k := dd.Kind.(type) {
		case *dbpb.Decision_StartRepair:
			w.stats.RepairsStarted++
		case *dbpb.Decision_FinishRepair:
			switch k.FinishRepair.Outcome {
			case dbpb.RepairOutcome_REPAIR_OUTCOME_DONE:
				w.stats.RepairsDone++
			default:
				w.stats.RepairsFailed++
			}
		case *dbpb.Decision_AdvanceRepair:
			if k.AdvanceRepair.To == dbpb.RepairStep_REPAIR_STEP_ROLLBACK {
				w.stats.RollBacks++
			}
		case *dbpb.Decision_DoneCleanup:
			w.stats.Cleanups++
		case *dbpb.Decision_AddCleanup:
			w.stats.ZombiesFound++
		}
	}
	w.checkDB()
	return r.Data
}

func decisionName(d *dbpb.Decision) string {
	name := fmt.Sprintf("%T", d.Kind)
	name = strings.TrimPrefix(name, "*dbpb.Decision_")
	return name
}

func decisionStr(d *dbpb.Decision) string {
	switch k := d.Kind.(type) {
	case *dbpb.Decision_RegisterHost:
		return fmt.Sprintf("register_host %s %s", k.RegisterHost.HostId, k.RegisterHost.RaftAddress)
	case *dbpb.Decision_PlaceShard:
		return fmt.Sprintf("place_shard %d on %v", k.PlaceShard.ShardId, k.PlaceShard.HostIds)
	case *dbpb.Decision_StartRepair:
		s := k.StartRepair
		return fmt.Sprintf("start_repair %d %s new_host=%s old=%d (%s)", s.ShardId, planner.KindName(s.Kind), s.NewHostId, s.OldReplicaId, s.Reason)
	case *dbpb.Decision_AdvanceRepair:
		a := k.AdvanceRepair
		return fmt.Sprintf("advance_repair %d #%d %s -> %s %s", a.ShardId, a.RepairId, planner.StepName(a.From), planner.StepName(a.To), a.Reason)
	case *dbpb.Decision_FinishRepair:
		f := k.FinishRepair
		return fmt.Sprintf("finish_repair %d #%d %s %s", f.ShardId, f.RepairId, f.Outcome, f.Reason)
	case *dbpb.Decision_AddCleanup:
		a := k.AddCleanup
		return fmt.Sprintf("add_cleanup %s %d/%d (%s)", a.HostId, a.ShardId, a.ReplicaId, a.Reason)
	case *dbpb.Decision_DoneCleanup:
		a := k.DoneCleanup
		return fmt.Sprintf("done_cleanup %s %d/%d", a.HostId, a.ShardId, a.ReplicaId)
	case *dbpb.Decision_ReplaceHost:
		return fmt.Sprintf("replace_host %s by %s", k.ReplaceHost.OldHostId, k.ReplaceHost.NewHostId)
	case *dbpb.Decision_ForgetHost:
		return "forget_host " + k.ForgetHost.HostId
	case *dbpb.Decision_EndMaintenance:
		return "end_maintenance " + k.EndMaintenance.HostId
	case *dbpb.Decision_MarkDrained:
		return "mark_drained " + k.MarkDrained.HostId
	case *dbpb.Decision_MarkBootstrapped:
		return fmt.Sprintf("mark_bootstrapped %d", k.MarkBootstrapped.ShardId)
	case *dbpb.Decision_RecordFailure:
		return fmt.Sprintf("record_failure %d %s", k.RecordFailure.ShardId, k.RecordFailure.Reason)
	}
	return decisionName(d)
}

// ---------------------------------------------------------------------------
// Failover.

// failover deposes the scheduler: no leader for a while, then a new epoch.
// A cold successor starts with empty observations (a server that just
// started); a warm one keeps them (a follower that received the reports).
func (w *World) failover() {
	if !w.drummerUp() {
		return
	}
	w.stats.Failovers++
	gap := w.dur(w.cfg.Tick, 5*time.Second)
	w.downTill = w.now.Add(gap)
	w.warm = w.chance(0.5)
	w.zombie = nil
	if w.chance(0.5) {
		// The deposed scheduler keeps answering for a while with its last
		// orders (its epoch is still current until the successor acquires).
		z := &drummer{epoch: w.epoch, board: maps.Clone(w.drummer.board)}
		w.zombie = z
		w.zomTill = w.now.Add(w.dur(0, gap))
	}
	if !w.warm {
		// The successor is a server that just started: it hears nothing
		// until it takes over, then starts from empty observations.
		w.drummer = w.newDrummer()
	}
	w.tracef("drummer: scheduler leader lost; new one (warm=%v) in %s", w.warm, gap)
}

// failoverTick completes a pending failover once the gap is over.
func (w *World) failoverTick() {
	if w.downTill.IsZero() || w.now.Before(w.downTill) {
		return
	}
	w.downTill = time.Time{}
	w.zombie = nil
	old := w.epoch
	w.holder = w.holder%3 + 1
	r := w.st.ApplyCommand(&dbpb.Command{Version: db.CommandVersion, NowUnixMs: w.now.UnixMilli(),
		Op: &dbpb.Command_AcquireEpoch{AcquireEpoch: &dbpb.AcquireEpoch{Holder: w.holder, ExpectEpoch: old, DeploymentId: 9}}})
	if r.Code != dbpb.Code_CODE_OK {
		w.violate("epoch acquisition failed: %s", r.Code)
		return
	}
	w.epoch = w.st.Epoch
	if !w.warm {
		w.stats.ColdFailovers++
		w.drummer = w.newDrummer()
	}
	w.warm = false
	w.drummer.resetScheduler(w.epoch)
	w.tracef("drummer: holder %d acquired epoch %d", w.holder, w.epoch)
	// The deposed scheduler's last decisions arrive late: all refused.
	if len(w.lastBatch) > 0 && w.lastEpoch == old {
		before := w.st.Hash()
		r := w.st.ApplyCommand(&dbpb.Command{Version: db.CommandVersion, Epoch: old, NowUnixMs: w.now.UnixMilli(),
			Op: &dbpb.Command_Decisions{Decisions: &dbpb.Decisions{Items: w.lastBatch}}})
		if r.Code != dbpb.Code_CODE_STALE_EPOCH || w.st.Hash() != before {
			w.violate("late decisions of epoch %d after epoch %d was acquired: %s (state changed: %v)", old, w.epoch, r.Code, w.st.Hash() != before)
		} else {
			w.stats.StaleEpochRejected++
		}
	}
}
