// Package reportproto builds a nodehost's reports to one drummer server:
// a full report, or the deltas since what that server last acknowledged
// (the Report protocol of api/drummerpb). The nodehost agent and the
// simulated fleet (internal/fleet) share it, so the fleet speaks exactly
// the agent's protocol.
//
// A reporter keeps one Endpoint per drummer server. For each report it
// takes the host's current View (an immutable picture of the replicas it
// runs), calls Build, sends the request, and then calls Acked with the
// reply or Failed with the error.
package reportproto

import (
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// Identity is what every report says about the host itself.
type Identity struct {
	HostID      string
	RaftAddress string
	APIAddress  string
	Labels      map[string]string
	Apps        []string
	Version     string
	// Session is random per agent start; with the sequence number it lets
	// a server notice missed deltas.
	Session uint64
}

// View is an immutable picture of what the host runs. Once handed to
// Build, neither the maps nor the messages in it may change: a new View is
// made for every change.
type View struct {
	// Replicas by shard, without Membership.
	Replicas map[uint64]*drummerpb.ReplicaReport
	// Memberships of the shards whose local replica leads.
	Memberships map[uint64]*drummerpb.Membership
	// Disk is the on-disk inventory; DiskVersion increases whenever it is
	// taken again (it is sent when the version moved, and with full
	// reports).
	Disk        []*drummerpb.ReplicaKey
	DiskVersion uint64
}

// Status is the agent's state that every report carries.
type Status struct {
	// EpochSeen is the highest scheduler epoch seen.
	EpochSeen uint64
	// Starting is set while replicas are still being started.
	Starting bool
}

// Results returns order results recorded after sequence number seq (all
// of them, or as many as one report may carry) and the sequence number of
// the last one returned (the latest one when none is).
type Results func(seq uint64) ([]*drummerpb.OrderResult, uint64)

// Endpoint is the delta state for one drummer server. It is used by one
// goroutine at a time.
type Endpoint struct {
	seq        uint64
	full       bool
	lastFull   time.Time
	sent       map[uint64]*drummerpb.ReplicaReport
	sentView   *View
	sentCCI    map[uint64]uint64
	sentDisk   uint64
	sentResult uint64
	// leader is set while this server's last reply came from the
	// scheduler leader: only it gets the fast cadence.
	leader bool
	// latency is how long the last acknowledged report took; took is how
	// long the last one took, answered or not.
	latency, took time.Duration
	// expect: the leader said orders are on their way (a repair in flight
	// involves this host), so the fast cadence applies without work here.
	expect bool
	// orders are the orders in force as of the leader's last reply, named
	// by ordersEpoch and ordersVersion (0: none held). Reports send the
	// name, and the leader leaves the list out while it still holds.
	orders        []*drummerpb.Order
	ordersEpoch   uint64
	ordersVersion uint64
}

// NewEndpoint returns the state of a server that has heard nothing yet:
// the first report is full.
func NewEndpoint() *Endpoint { return &Endpoint{full: true} }

// Report is a built report waiting for its reply.
type Report struct {
	Req       *drummerpb.ReportRequest
	view      *View
	resultSeq uint64
	built     time.Time
}

// Build assembles the next report: full when the server asked for one,
// after an error, or fullEvery after the last full one; otherwise the
// replicas that changed since the acknowledged report, the ones that
// stopped, memberships with a newer ConfigChangeID, the disk inventory
// when it was taken again, and the order results not yet acknowledged.
func (e *Endpoint) Build(id *Identity, v *View, st Status, results Results, fullEvery time.Duration, now time.Time) *Report {
	full := e.full || e.sent == nil || now.Sub(e.lastFull) >= fullEvery
	req := &drummerpb.ReportRequest{
		HostId: id.HostID, RaftAddress: id.RaftAddress, ApiAddress: id.APIAddress,
		Labels: id.Labels, Apps: id.Apps, Version: id.Version,
		Session: id.Session, Seq: e.seq + 1, Full: full,
		EpochSeen: st.EpochSeen,
		Starting:  st.Starting,

		OrdersEpoch: e.ordersEpoch, OrdersVersion: e.ordersVersion,
	}
	if e.sentCCI == nil {
		e.sentCCI = map[uint64]uint64{}
	}
	// The very view the server acknowledged has nothing new in it.
	if full || v != e.sentView {
		ids := make([]uint64, 0, len(v.Replicas))
		for id := range v.Replicas {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			cur := v.Replicas[id]
			m := v.Memberships[id]
			newM := m != nil && (full || m.ConfigChangeId > e.sentCCI[id])
			if !full && !newM && proto.Equal(e.sent[id], cur) {
				continue
			}
			rr := cur
			if newM {
				rr = proto.CloneOf(cur)
				rr.Membership = m
			}
			req.Replicas = append(req.Replicas, rr)
		}
		if !full {
			for id, old := range e.sent {
				if cur := v.Replicas[id]; cur == nil || cur.ReplicaId != old.ReplicaId {
					req.Stopped = append(req.Stopped, &drummerpb.ReplicaKey{ShardId: id, ReplicaId: old.ReplicaId})
				}
			}
		}
	}
	if v.DiskVersion > e.sentDisk || (full && v.DiskVersion > 0) {
		req.HasDiskInventory = true
		req.Disk = v.Disk
	}
	r := &Report{Req: req, view: v, built: now}
	if results != nil {
		req.Results, r.resultSeq = results(e.sentResult)
	}
	return r
}

// Acked records that the server took report r and answered resp at now.
func (e *Endpoint) Acked(r *Report, resp *drummerpb.ReportResponse, now time.Time) {
	req := r.Req
	e.seq = req.Seq
	if req.Full {
		e.lastFull = now
		e.sentCCI = map[uint64]uint64{}
	}
	e.full = resp.GetNeedFull()
	e.leader = resp.GetLeader()
	e.expect = e.leader && resp.GetExpectOrders()
	e.holdOrders(req, resp)
	e.latency = max(0, now.Sub(r.built))
	e.took = e.latency
	e.sent = r.view.Replicas
	e.sentView = r.view
	if e.full {
		e.sentView = nil
	}
	for _, rr := range req.Replicas {
		if rr.Membership != nil {
			e.sentCCI[rr.ShardId] = rr.Membership.ConfigChangeId
		}
	}
	if req.HasDiskInventory {
		e.sentDisk = r.view.DiskVersion
	}
	// The server may leave the last results for the next report (they
	// are consecutive in seq).
	seq := r.resultSeq
	if left := uint64(resp.GetResultsLeft()); left > 0 && left <= uint64(len(req.Results)) {
		seq -= left
	}
	e.sentResult = seq
}

// holdOrders keeps the orders in force after a reply: the leader's new
// list, or the held one when the leader said it is unchanged.
func (e *Endpoint) holdOrders(req *drummerpb.ReportRequest, resp *drummerpb.ReportResponse) {
	switch {
	case !resp.GetLeader():
		e.dropOrders()
	case resp.GetOrdersUnchanged():
		// Unchanged names what this report asked about (the list held,
		// which Build put in it); anything else is a confused server, and
		// the next report asks for the full list.
		if req.OrdersEpoch != resp.GetEpoch() || req.OrdersVersion != resp.GetOrdersVersion() {
			e.dropOrders()
		}
	default:
		e.orders = resp.GetOrders()
		e.ordersEpoch, e.ordersVersion = resp.GetEpoch(), resp.GetOrdersVersion()
		if e.ordersVersion == 0 {
			e.ordersEpoch = 0
		}
	}
}

func (e *Endpoint) dropOrders() {
	e.orders, e.ordersEpoch, e.ordersVersion = nil, 0, 0
}

// Orders returns the orders in force as of this server's last reply as
// the scheduler leader (nil after any other reply or a failure). Callers
// submit them after every reply, whether sent again or held: executing an
// order is idempotent, and a failed one is retried that way.
func (e *Endpoint) Orders() []*drummerpb.Order { return e.orders }

// Failed records that report r failed at now: the server may or may not
// have taken its deltas, so the next report is full.
func (e *Endpoint) Failed(r *Report, now time.Time) {
	e.took = max(0, now.Sub(r.built))
	e.full = true
	e.sentView = nil
	// Until it answers again as the leader, a failing server gets the
	// normal cadence: a dead or overloaded server is not hammered.
	e.leader = false
	e.dropOrders()
}

// Leader reports whether this server's last reply came from the scheduler
// leader.
func (e *Endpoint) Leader() bool { return e.leader }

// FastInterval is the report period to the scheduler leader while orders
// flow: multi-step repairs take one round trip per step, so each next step
// arrives sooner. Followers plan nothing, so they hear from the host at the
// normal interval (at 10,000 hosts, reporting fast to all three servers
// tripled the report load of a launch for nothing).
const FastInterval = 250 * time.Millisecond

// Interval is the period until the next report to this server: the
// server's interval to the scheduler leader, FollowerFactor times it to
// any other server, and, while orders are being carried out or the leader
// said more are on their way (ReportResponse.expect_orders),
// FastInterval to the leader — stretched to LatencyFactor times the last
// report's latency, so that a loaded leader receives fewer reports
// instead of slower ones (at 10,000 hosts working at once, a fixed 250 ms
// asks for 40,000 reports a second).
func (e *Endpoint) Interval(base time.Duration, working bool) time.Duration {
	switch {
	case !e.leader:
		return FollowerFactor * base
	case working || e.expect:
		return min(base, max(FastInterval, LatencyFactor*e.latency))
	}
	return base
}

// FollowerFactor stretches the report period to servers other than the
// scheduler leader. They plan nothing: reports keep their soft state warm
// for a failover, and a new leader credits the reports it took as a
// follower with the difference (scheduler.Node), so no live host looks
// silent after a failover. With three servers this is a third fewer
// reports; at 10,000 hosts the followers' share of the machine was as
// large as the leader's.
const FollowerFactor = 2

// Pause is how long to wait after the last report's reply or failure
// before the next one, given the period Interval chose before sending it:
// the rest of the period, and at least half of it. The period runs from
// send to send, so a server hears from a live host at least every Timeout
// plus half a period (12.5 s at the 5 s interval, inside the 15 s suspect
// timeout). Waiting a whole period after each reply let slow replies
// stretch that silence to interval plus latency, and at 10,000 hosts a
// launch turned 1,211 live hosts suspect. The floor keeps a loaded
// server's load below the nominal rate.
func (e *Endpoint) Pause(period time.Duration) time.Duration {
	return max(period-e.took, period/2)
}

// LatencyFactor bounds the fast cadence's load on a leader: a host waits at
// least this many times its last report's latency before the next one.
const LatencyFactor = 4

// Nudge returns ch for the leader's reporter and nil (never ready) for the
// others: an early report after an order carries its result to the server
// that plans the next step.
func (e *Endpoint) Nudge(ch <-chan struct{}) <-chan struct{} {
	if e.leader {
		return ch
	}
	return nil
}

// Timeout bounds one Report call to a server that asked for reports every
// base. It does not shrink with the fast cadence: a report that fails makes
// the next one full, so a timeout that is short against a loaded server's
// latency turns load into more load.
func Timeout(base time.Duration) time.Duration { return max(2*base, 2*time.Second) }
