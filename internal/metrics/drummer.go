// Package metrics holds the Prometheus metrics of drummer servers and
// nodehosts: each process builds its own registry (no global state), the
// counts come from small interfaces (StatsSource) and gRPC interceptors,
// and Handler serves them with dragonboat's own metrics on one /metrics
// endpoint. Label values come from small fixed sets (states, kinds, gRPC
// methods and codes): there are no per-shard or per-host labels.
package metrics

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// Namespace prefixes every metric.
const Namespace = "drummer"

// HostKey is a host's liveness (up, suspect, dead) and admin state
// (active, cordoned, draining, drained, maintenance).
type HostKey struct{ Liveness, Admin string }

// RepairKey is a repair's kind (replace, add, remove, move, rollback) and
// current step.
type RepairKey struct{ Kind, Step string }

// FinishedRepair is one repair from the DB's bounded history of finished
// repairs.
type FinishedRepair struct {
	ID uint64
	// Kind as in RepairKey; Outcome done, failed, rolled_back or cancelled.
	Kind, Outcome string
	Started       time.Time
	Finished      time.Time
}

// DrummerStats are the counts a drummer server reports at each scrape.
// The fleet counts (Hosts, Shards, RepairsInFlight, Finished) are filled
// by the server holding the scheduler epoch only, so sums over servers
// count each host and shard once.
type DrummerStats struct {
	// Leader: this server holds the scheduler epoch.
	Leader bool
	// Epoch is the scheduler epoch in this server's DB replica.
	Epoch uint64
	// LeaderChanges counts the DB shard's leader changes this process saw.
	LeaderChanges uint64
	// AppliedIndex is this server's DB replica's applied Raft index.
	AppliedIndex uint64
	// DBObjects counts the DB's records by kind (shards, hosts, kv,
	// drummers).
	DBObjects map[string]int

	Hosts           map[HostKey]int
	Shards          map[string]int
	RepairsInFlight map[RepairKey]int
	// Finished is the DB's recent history, oldest first.
	Finished []FinishedRepair
	// LeaderTransfers counts the leader transfers this server's scheduler
	// ordered for balance (or off hosts that may not lead) since it
	// started.
	LeaderTransfers uint64
}

// StatsSource gives the counts; implemented by server.Server. Stats is
// called once per scrape and must not block on I/O.
type StatsSource interface {
	Stats() DrummerStats
}

// Drummer are a drummer server's metrics.
type Drummer struct {
	reg *prometheus.Registry
	src StatsSource

	leader, epoch, appliedIndex *prometheus.Desc
	leaderChanges, dbObjects    *prometheus.Desc
	hosts, shards, repairs      *prometheus.Desc
	leaderTransfers             *prometheus.Desc

	mu             sync.Mutex
	primed         bool
	seen           map[uint64]bool
	repairsDone    *prometheus.CounterVec
	repairDuration *prometheus.HistogramVec

	reportSeconds *prometheus.HistogramVec
	ordersSent    *prometheus.CounterVec
	apiRequests   *prometheus.CounterVec
	apiSeconds    *prometheus.HistogramVec
	planSeconds   prometheus.Histogram
	planShards    prometheus.Histogram
	planHosts     prometheus.Histogram
	decisions     prometheus.Counter
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}

// NewDrummer registers a drummer server's metrics (and the Go and process
// collectors) in a new registry. src may be set later with SetSource.
func NewDrummer(src StatsSource) *Drummer {
	d := &Drummer{
		reg:           prometheus.NewRegistry(),
		src:           src,
		seen:          map[uint64]bool{},
		leader:        desc("is_leader", "1 if this server holds the scheduler epoch (plans and answers operator calls), else 0."),
		epoch:         desc("scheduler_epoch", "Scheduler epoch in this server's DB replica."),
		appliedIndex:  desc("db_applied_index", "Applied Raft index of this server's DB replica; max over servers minus this is a follower's lag."),
		leaderChanges: desc("leader_changes_seen_total", "DB shard leader changes seen by this server."),
		dbObjects:     desc("db_objects", "Records in this server's DB replica, by kind.", "kind"),
		hosts:         desc("hosts", "Registered nodehosts by liveness and admin state (leader only).", "state", "admin_state"),
		shards:        desc("shards", "Shards by health (leader only).", "health"),
		repairs:       desc("repairs_in_flight", "Repairs in flight by kind and step (leader only; kind balance is balancing).", "kind", "step"),
		leaderTransfers: desc("leader_transfers_total",
			"Leader transfers this server's scheduler ordered for balance or off hosts that may not lead, since it started."),
		repairsDone: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "repairs_finished_total",
			Help: "Repairs finished by kind and result, seen by this server while leader."}, []string{"kind", "result"}),
		repairDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "repair_duration_seconds",
			Help:    "Time from a repair's start to its end, by kind.",
			Buckets: []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600}}, []string{"kind"}),
		reportSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "report_handling_seconds",
			Help:    "Time to handle one nodehost report, by whether this server is the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"leader"}),
		ordersSent: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "orders_sent_total",
			Help: "Orders sent to nodehosts in report answers, by kind (an order in force is sent with every report until done)."}, []string{"kind"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "api_requests_total",
			Help: "Drummer gRPC API calls by method and status code."}, []string{"method", "code"}),
		apiSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "api_request_duration_seconds",
			Help: "Drummer gRPC API call duration by method.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}, []string{"method"}),
		planSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "plan_round_duration_seconds",
			Help: "Duration of one planning round of the scheduler.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		planShards: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "plan_round_shards",
			Help: "Shards examined in one planning round.", Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		planHosts: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "plan_round_hosts",
			Help: "Hosts examined in one planning round.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		decisions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "plan_decisions_total",
			Help: "Decisions the planner proposed to the DB."}),
	}
	d.reg.MustRegister(d, d.repairsDone, d.repairDuration, d.reportSeconds, d.ordersSent, d.apiRequests, d.apiSeconds,
		d.planSeconds, d.planShards, d.planHosts, d.decisions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return d
}

// SetSource sets the stats source (a server made after its metrics).
func (d *Drummer) SetSource(src StatsSource) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.src = src
}

// Registry is the registry Handler serves.
func (d *Drummer) Registry() *prometheus.Registry { return d.reg }

// Describe implements prometheus.Collector.
func (d *Drummer) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{d.leader, d.epoch, d.appliedIndex, d.leaderChanges, d.dbObjects, d.hosts, d.shards, d.repairs, d.leaderTransfers} {
		ch <- x
	}
}

// Collect implements prometheus.Collector: one Stats call per scrape.
func (d *Drummer) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	src := d.src
	d.mu.Unlock()
	if src == nil {
		return
	}
	st := src.Stats()
	gauge := func(x *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(x, prometheus.GaugeValue, v, labels...)
	}
	gauge(d.leader, b2f(st.Leader))
	gauge(d.epoch, float64(st.Epoch))
	gauge(d.appliedIndex, float64(st.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(d.leaderChanges, prometheus.CounterValue, float64(st.LeaderChanges))
	ch <- prometheus.MustNewConstMetric(d.leaderTransfers, prometheus.CounterValue, float64(st.LeaderTransfers))
	for k, n := range st.DBObjects {
		gauge(d.dbObjects, float64(n), k)
	}
	if !st.Leader {
		d.mu.Lock()
		d.primed = false
		d.mu.Unlock()
		return
	}
	// Every state is reported, zeros included, so that alerts and graphs
	// see a series drop to 0 instead of vanishing.
	for _, l := range HostLiveness {
		for _, a := range HostAdminStates {
			gauge(d.hosts, float64(st.Hosts[HostKey{l, a}]), l, a)
		}
	}
	for k, n := range st.Hosts {
		if !knownHost(k) {
			gauge(d.hosts, float64(n), k.Liveness, k.Admin)
		}
	}
	for _, h := range ShardHealths {
		gauge(d.shards, float64(st.Shards[h]), h)
	}
	for k, n := range st.RepairsInFlight {
		gauge(d.repairs, float64(n), k.Kind, k.Step)
	}
	d.finished(st.Finished)
}

// finished counts repairs that finished since the previous scrape. The
// first scrape after becoming leader only remembers the history, so a
// new leader does not count its predecessor's repairs again.
func (d *Drummer) finished(fs []FinishedRepair) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := make(map[uint64]bool, len(fs))
	for _, f := range fs {
		now[f.ID] = true
		if d.primed && !d.seen[f.ID] {
			d.repairsDone.WithLabelValues(f.Kind, f.Outcome).Inc()
			if !f.Started.IsZero() && f.Finished.After(f.Started) {
				d.repairDuration.WithLabelValues(f.Kind).Observe(f.Finished.Sub(f.Started).Seconds())
			}
		}
	}
	d.seen, d.primed = now, true
}

// The label values of the fleet gauges (all reported, zeros included).
var (
	HostLiveness    = []string{"up", "suspect", "dead"}
	HostAdminStates = []string{"active", "cordoned", "draining", "drained", "maintenance"}
	ShardHealths    = []string{"healthy", "under_replicated", "unavailable", "pending"}
)

func knownHost(k HostKey) bool {
	return contains(HostLiveness, k.Liveness) && contains(HostAdminStates, k.Admin)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// PlanRound records one planning round: its duration, the shards and
// hosts it examined and the decisions it proposed.
func (d *Drummer) PlanRound(took time.Duration, shards, hosts, decisions int) {
	d.planSeconds.Observe(took.Seconds())
	d.planShards.Observe(float64(shards))
	d.planHosts.Observe(float64(hosts))
	d.decisions.Add(float64(decisions))
}

// UnaryInterceptor measures every Drummer API call, and for Report the
// handling time and the orders sent back.
func (d *Drummer) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		took := time.Since(start)
		m := methodName(info.FullMethod)
		d.apiRequests.WithLabelValues(m, status.Code(err).String()).Inc()
		d.apiSeconds.WithLabelValues(m).Observe(took.Seconds())
		if r, ok := resp.(*drummerpb.ReportResponse); ok && err == nil {
			d.reportSeconds.WithLabelValues(boolLabel(r.Leader)).Observe(took.Seconds())
			for _, o := range r.Orders {
				d.ordersSent.WithLabelValues(OrderKind(o)).Inc()
			}
		}
		return resp, err
	}
}

func boolLabel(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// methodName is the last element of a full gRPC method name; only
// methods of the services a server registers reach the interceptor, so
// the set is fixed.
func methodName(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}

// OrderKind names an order's kind: start, stop, config_change,
// transfer_leader (unknown for an empty order).
func OrderKind(o *drummerpb.Order) string {
	switch o.GetKind().(type) {
	case *drummerpb.Order_Start:
		return "start"
	case *drummerpb.Order_Stop:
		return "stop"
	case *drummerpb.Order_ConfigChange:
		return "config_change"
	case *drummerpb.Order_TransferLeader:
		return "transfer_leader"
	}
	return "unknown"
}
