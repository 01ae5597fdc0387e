package agent

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/events"
	"github.com/drummerhq/drummer/internal/reportproto"
)

var eventsNudge = events.Event{Kind: events.NodeReady}

// reporters keeps one reporter per drummer server: heartbeats go to all of
// them (so every server's soft state is warm), orders come from the leader.
type reporters struct {
	a        *Agent
	interval atomic.Int64 // nanoseconds

	mu      sync.Mutex
	learned []string
	// nudged is closed (and replaced) to make the leader's reporter send
	// now instead of at its next interval: an order finished, so the
	// scheduler can take the next step without waiting a whole period.
	nudged chan struct{}
	last   time.Time
}

func newReporters(a *Agent) *reporters {
	r := &reporters{a: a, nudged: make(chan struct{})}
	r.interval.Store(int64(a.cfg.ReportInterval))
	return r
}

// nudge asks for an early report; at most one per 50ms.
func (r *reporters) nudge() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.last) < 50*time.Millisecond {
		return
	}
	r.last = time.Now()
	close(r.nudged)
	r.nudged = make(chan struct{})
}

func (r *reporters) nudgeCh() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nudged
}

func (r *reporters) endpoints() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	eps := append(splitEndpoints(r.a.cfg.DrummerEndpoints), r.learned...)
	slices.Sort(eps)
	return slices.Compact(eps)
}

func (r *reporters) learn(eps []string) {
	if len(eps) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.learned = slices.Clone(eps)
}

// run keeps a reporter goroutine per known endpoint.
func (r *reporters) run(ctx context.Context) {
	running := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	defer func() {
		for _, cancel := range running {
			cancel()
		}
		wg.Wait()
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		want := r.endpoints()
		for _, ep := range want {
			if _, ok := running[ep]; !ok {
				rctx, cancel := context.WithCancel(ctx)
				running[ep] = cancel
				wg.Add(1)
				go func() { defer wg.Done(); r.report(rctx, ep) }()
			}
		}
		for ep, cancel := range running {
			if !slices.Contains(want, ep) {
				cancel()
				delete(running, ep)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// endpoint is the delta state for one drummer server, and its error log.
type endpoint struct {
	*reportproto.Endpoint
	lastErr    string
	lastErrLog time.Time
}

func (r *reporters) report(ctx context.Context, ep string) {
	a := r.a
	cc, err := grpc.NewClient(ep, a.drummerDialOptions()...)
	if err != nil {
		a.log.Error("bad drummer endpoint", "endpoint", ep, "err", err)
		return
	}
	defer cc.Close()
	dc := drummerpb.NewDrummerClient(cc)
	st := &endpoint{Endpoint: reportproto.NewEndpoint()}
	for {
		// Report faster to the leader while orders flow (see
		// reportproto.Endpoint.Interval).
		base := time.Duration(r.interval.Load())
		interval := st.Interval(base, a.exec.working())
		nudged := st.Nudge(r.nudgeCh())
		rep := r.build(st)
		rctx, cancel := context.WithTimeout(ctx, reportproto.Timeout(base))
		var p peer.Peer
		resp, err := dc.Report(rctx, rep.Req, grpc.Peer(&p))
		cancel()
		if err != nil {
			// The server may or may not have taken the deltas: start over
			// from a full report.
			st.Failed(rep, time.Now())
			r.logError(st, ep, err)
		} else {
			st.Acked(rep, resp, time.Now())
			st.lastErr = ""
			r.handle(resp, st.Orders(), ep, &p)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(st.Pause(interval)):
		case <-nudged:
			// Let the collector see the effect of the order first.
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (r *reporters) logError(st *endpoint, ep string, err error) {
	msg := err.Error()
	// Say it once per change, and again every minute while it lasts.
	if msg == st.lastErr && time.Since(st.lastErrLog) < time.Minute {
		return
	}
	st.lastErr, st.lastErrLog = msg, time.Now()
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition:
		r.a.log.Error("drummer refused this nodehost's report", "endpoint", ep, "err", status.Convert(err).Message())
	default:
		r.a.log.Warn("cannot report to drummer", "endpoint", ep, "err", msg)
	}
}

// build assembles the next report for an endpoint: full, or the deltas
// since what that endpoint last acknowledged.
func (r *reporters) build(st *endpoint) *reportproto.Report {
	a := r.a
	id := &reportproto.Identity{
		HostID: a.store.hostID, RaftAddress: a.cfg.RaftAddress, APIAddress: a.cfg.APIAddress,
		Labels: a.cfg.Labels, Apps: a.cfg.Apps.Names(), Version: a.cfg.Version, Session: a.session,
	}
	status := reportproto.Status{EpochSeen: a.exec.epochSeen(), Starting: a.exec.starting()}
	return st.Build(id, a.col.view(), status, a.exec.resultsSince, a.cfg.FullReportEvery, time.Now())
}

// handle acts on a reply; orders are the ones in force after it (sent with
// it, or held when the leader said they are unchanged).
func (r *reporters) handle(resp *drummerpb.ReportResponse, orders []*drummerpb.Order, ep string, p *peer.Peer) {
	a := r.a
	if resp.DeploymentId != 0 && resp.DeploymentId != a.store.deployment {
		a.log.Error("drummer belongs to another deployment; ignoring its orders",
			"drummer_deployment_id", resp.DeploymentId, "this_deployment_id", a.store.deployment)
		return
	}
	if resp.ReportIntervalMs != 0 {
		r.interval.Store(int64(time.Duration(resp.ReportIntervalMs) * time.Millisecond))
	}
	if resp.Leader {
		r.learn(resp.DrummerEndpoints)
		if resp.Epoch > a.store.epochSeen() {
			// Durable before any order of the new epoch runs, so that
			// after a crash a deposed leader's orders are still refused.
			a.store.noteEpoch(resp.Epoch)
			if err := a.store.flush(); err != nil {
				a.log.Error("cannot record the scheduler epoch; not taking its orders", "epoch", resp.Epoch, "err", err)
				return
			}
		}
		if ok, why := a.leader.verify(a.tls != nil, resp.Epoch, ep, p); !ok {
			orders = a.exec.filterUnverified(orders, why)
		}
		a.exec.submit(resp.Epoch, orders)
	}
}
