package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// maxOrderKinds bounds the order ID → kind memory of a nodehost's
// metrics (orders are few at a time; the map is cleared when full).
const maxOrderKinds = 10_000

// Nodehost are a nodehost's metrics.
type Nodehost struct {
	reg *prometheus.Registry

	mu sync.Mutex
	nh *dragonboat.NodeHost
	// kinds remembers the kind of orders received, to label the
	// outcomes the next reports carry.
	kinds map[string]string

	replicas      *prometheus.Desc
	orders        *prometheus.CounterVec
	reportSeconds *prometheus.HistogramVec
	dataRequests  *prometheus.CounterVec
	dataSeconds   *prometheus.HistogramVec
}

// NewNodehost registers a nodehost's metrics in a new registry; the
// NodeHost is set with SetNodeHost once it runs.
func NewNodehost() *Nodehost {
	n := &Nodehost{
		reg:      prometheus.NewRegistry(),
		kinds:    map[string]string{},
		replicas: desc("nodehost_replicas", "Replicas running on this nodehost by role (leader, follower, non_voting, witness).", "role"),
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "nodehost_orders_executed_total",
			Help: "Orders this nodehost executed, by kind and outcome (done, failed, rejected)."}, []string{"kind", "outcome"}),
		reportSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "nodehost_report_duration_seconds",
			Help:    "Round trip of one report to a drummer server, by status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}, []string{"code"}),
		dataRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "nodehost_dataplane_requests_total",
			Help: "NodehostAPI calls by operation (propose, read, open_session, close_session, list_local_shards) and status code."}, []string{"op", "code"}),
		dataSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "nodehost_dataplane_duration_seconds",
			Help:    "NodehostAPI call duration by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"op"}),
	}
	n.reg.MustRegister(n, n.orders, n.reportSeconds, n.dataRequests, n.dataSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return n
}

// Registry is the registry Handler serves.
func (n *Nodehost) Registry() *prometheus.Registry { return n.reg }

// SetNodeHost sets the NodeHost whose replicas are counted.
func (n *Nodehost) SetNodeHost(nh *dragonboat.NodeHost) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nh = nh
}

// Describe implements prometheus.Collector.
func (n *Nodehost) Describe(ch chan<- *prometheus.Desc) { ch <- n.replicas }

// Collect implements prometheus.Collector.
func (n *Nodehost) Collect(ch chan<- prometheus.Metric) {
	n.mu.Lock()
	nh := n.nh
	n.mu.Unlock()
	if nh == nil {
		return
	}
	counts := map[string]int{"leader": 0, "follower": 0, "non_voting": 0, "witness": 0}
	for _, si := range nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true}).ShardInfoList {
		switch {
		case si.IsWitness:
			counts["witness"]++
		case si.IsNonVoting:
			counts["non_voting"]++
		case si.LeaderID == si.ReplicaID && si.LeaderID != 0:
			counts["leader"]++
		default:
			counts["follower"]++
		}
	}
	for role, c := range counts {
		ch <- prometheus.MustNewConstMetric(n.replicas, prometheus.GaugeValue, float64(c), role)
	}
}

// ReportInterceptor is a client interceptor for the connections to the
// drummer servers: it times reports, remembers the kinds of the orders
// received and counts the outcomes the reports carry.
func (n *Nodehost) ReportInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method != drummerpb.Drummer_Report_FullMethodName {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		n.reportSeconds.WithLabelValues(status.Code(err).String()).Observe(time.Since(start).Seconds())
		n.mu.Lock()
		defer n.mu.Unlock()
		if r, ok := req.(*drummerpb.ReportRequest); ok && err == nil {
			// Results go to every drummer server; count them once, on
			// the first report that carried them.
			for _, res := range r.Results {
				kind, known := n.kinds[res.Id]
				if !known {
					continue
				}
				delete(n.kinds, res.Id)
				n.orders.WithLabelValues(kind, outcomeName(res.Outcome)).Inc()
			}
		}
		if r, ok := reply.(*drummerpb.ReportResponse); ok && err == nil {
			if len(n.kinds) > maxOrderKinds {
				clear(n.kinds)
			}
			for _, o := range r.Orders {
				n.kinds[o.Id] = OrderKind(o)
			}
		}
		return err
	}
}

func outcomeName(o drummerpb.OrderOutcome) string {
	switch o {
	case drummerpb.OrderOutcome_ORDER_OUTCOME_DONE:
		return "done"
	case drummerpb.OrderOutcome_ORDER_OUTCOME_FAILED:
		return "failed"
	case drummerpb.OrderOutcome_ORDER_OUTCOME_REJECTED:
		return "rejected"
	}
	return "unknown"
}

var dataOps = map[string]string{
	drummerpb.NodehostAPI_Propose_FullMethodName:         "propose",
	drummerpb.NodehostAPI_Read_FullMethodName:            "read",
	drummerpb.NodehostAPI_OpenSession_FullMethodName:     "open_session",
	drummerpb.NodehostAPI_CloseSession_FullMethodName:    "close_session",
	drummerpb.NodehostAPI_ListLocalShards_FullMethodName: "list_local_shards",
}

// APIInterceptor measures the NodehostAPI data plane (other services of
// the API server are left alone).
func (n *Nodehost) APIInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		op, ok := dataOps[info.FullMethod]
		if !ok {
			return h(ctx, req)
		}
		start := time.Now()
		resp, err := h(ctx, req)
		n.dataRequests.WithLabelValues(op, status.Code(err).String()).Inc()
		n.dataSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
		return resp, err
	}
}
