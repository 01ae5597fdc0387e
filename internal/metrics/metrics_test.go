package metrics

import (
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// fakeStats is a pure-logic stand-in for a server's Stats.
type fakeStats struct {
	mu sync.Mutex
	st DrummerStats
}

func (f *fakeStats) Stats() DrummerStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeStats) set(st DrummerStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
}

func scrape(t *testing.T, d *Drummer) string {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler(d.Registry(), nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

func TestDrummerGaugesAndFinishedRepairs(t *testing.T) {
	t0 := time.Unix(1000, 0)
	src := &fakeStats{}
	d := NewDrummer(src)
	src.set(DrummerStats{Leader: true, Epoch: 7, AppliedIndex: 42,
		Hosts:           map[HostKey]int{{"up", "active"}: 2, {"dead", "active"}: 1},
		Shards:          map[string]int{"healthy": 3, "under_replicated": 1},
		RepairsInFlight: map[RepairKey]int{{"replace", "catch_up"}: 1},
		Finished:        []FinishedRepair{{ID: 1, Kind: "replace", Outcome: "done", Started: t0, Finished: t0.Add(5 * time.Second)}},
	})
	body := scrape(t, d)
	for _, want := range []string{
		"drummer_is_leader 1", "drummer_scheduler_epoch 7", "drummer_db_applied_index 42",
		`drummer_hosts{admin_state="active",state="up"} 2`, `drummer_hosts{admin_state="active",state="dead"} 1`,
		`drummer_hosts{admin_state="drained",state="suspect"} 0`,
		`drummer_shards{health="healthy"} 3`, `drummer_shards{health="unavailable"} 0`,
		`drummer_repairs_in_flight{kind="replace",step="catch_up"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q", want)
		}
	}
	// The history present at the first scrape is not counted again.
	if n := testutil.ToFloat64(d.repairsDone.WithLabelValues("replace", "done")); n != 0 {
		t.Errorf("repairs finished after the first scrape = %v, want 0", n)
	}
	src.set(DrummerStats{Leader: true, Finished: []FinishedRepair{
		{ID: 1, Kind: "replace", Outcome: "done", Started: t0, Finished: t0.Add(5 * time.Second)},
		{ID: 2, Kind: "move", Outcome: "rolled_back", Started: t0, Finished: t0.Add(30 * time.Second)},
	}})
	scrape(t, d)
	scrape(t, d)
	if n := testutil.ToFloat64(d.repairsDone.WithLabelValues("move", "rolled_back")); n != 1 {
		t.Errorf("move rolled_back = %v, want 1", n)
	}
	if n := testutil.CollectAndCount(d.repairDuration); n != 1 {
		t.Errorf("duration series = %d, want 1", n)
	}
	// A follower reports only its own replica.
	src.set(DrummerStats{Leader: false, AppliedIndex: 40})
	body = scrape(t, d)
	if !strings.Contains(body, "drummer_is_leader 0") || strings.Contains(body, "drummer_hosts{") || strings.Contains(body, "drummer_shards{") {
		t.Errorf("follower scrape:\n%s", body)
	}
}

func TestOrderKind(t *testing.T) {
	for want, o := range map[string]*drummerpb.Order{
		"start":           {Kind: &drummerpb.Order_Start{}},
		"stop":            {Kind: &drummerpb.Order_Stop{}},
		"config_change":   {Kind: &drummerpb.Order_ConfigChange{}},
		"transfer_leader": {Kind: &drummerpb.Order_TransferLeader{}},
		"unknown":         {},
	} {
		if got := OrderKind(o); got != want {
			t.Errorf("OrderKind = %q, want %q", got, want)
		}
	}
}

// metricNames are the names every collector of both kinds describes.
func metricNames() map[string]bool {
	d, n := NewDrummer(nil), NewNodehost()
	cs := []prometheus.Collector{d, d.repairsDone, d.repairDuration, d.reportSeconds, d.ordersSent, d.apiRequests, d.apiSeconds,
		d.planSeconds, d.planShards, d.planHosts, d.decisions, n, n.orders, n.reportSeconds, n.dataRequests, n.dataSeconds}
	names := map[string]bool{}
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for desc := range ch {
			if m := re.FindStringSubmatch(desc.String()); m != nil {
				names[m[1]] = true
			}
		}
	}
	return names
}

// TestDocsNameRealMetrics keeps docs/observability.md and the Grafana
// dashboard in step with the code: every drummer_ name they use exists,
// and the doc lists every metric.
func TestDocsNameRealMetrics(t *testing.T) {
	names := metricNames()
	ref := regexp.MustCompile(`drummer_[a-z_]+`)
	for _, f := range []string{"../../docs/observability.md", "../../docs/grafana-dashboard.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, m := range ref.FindAllString(string(b), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
			if !names[base] && !names[m] && m != "drummer_http" && !strings.HasPrefix(m, "drummer_token") && !seen[m] {
				t.Errorf("%s names %s, which no collector has", f, m)
			}
			seen[m] = true
		}
	}
	doc, _ := os.ReadFile("../../docs/observability.md")
	for n := range names {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/observability.md does not describe %s", n)
		}
	}
}
