package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/pki"
	"github.com/drummerhq/drummer/internal/testcluster"
)

// web is an HTTPS client of a cluster's --http-address listeners with a
// viewer web token.
type web struct {
	t     *testing.T
	hc    *http.Client
	token string
}

func newWeb(t *testing.T, c *testcluster.Cluster) *web {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(c.CertsDir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	tok, err := pki.CreateToken(c.CertsDir, auth.RoleViewer, "e2e-viewer", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &web{t: t, hc: &http.Client{Transport: tr, Timeout: 20 * time.Second}, token: tok}
}

// get returns the status and body, or 0 and the error text.
func (w *web) get(url string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := w.hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of the sample with exactly this name and
// labels (e.g. `drummer_shards{health="healthy"}`), or -1.
func metric(body, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// leaderURL finds the server whose /metrics says it is the leader.
func (w *web) leaderURL(c *testcluster.Cluster) string {
	w.t.Helper()
	var url string
	waitUntil(w.t, 2*time.Minute, "a leader in /metrics", func() (bool, string) {
		for _, d := range c.Drummers {
			u := "https://" + d.HTTPAddr
			if code, body := w.get(u + "/metrics"); code == 200 && metric(body, "drummer_is_leader") == 1 {
				url = u
				return true, ""
			}
		}
		return false, "no server says drummer_is_leader 1"
	})
	return url
}

func waitUntil(t *testing.T, d time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, s := f()
		if ok {
			return
		}
		last = s
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s; last: %s", d, what, last)
}

// waitMetrics waits until every series has its value on the leader.
func (w *web) waitMetrics(c *testcluster.Cluster, d time.Duration, want map[string]float64) {
	w.t.Helper()
	waitUntil(w.t, d, fmt.Sprint("metrics ", want), func() (bool, string) {
		var got []string
		ok := true
		for _, dr := range c.Drummers {
			code, body := w.get("https://" + dr.HTTPAddr + "/metrics")
			if code != 200 || metric(body, "drummer_is_leader") != 1 {
				continue
			}
			for s, v := range want {
				g := metric(body, s)
				got = append(got, fmt.Sprintf("%s=%v", s, g))
				ok = ok && g == v
			}
			return ok, strings.Join(got, " ")
		}
		return false, "no leader answered"
	})
}

func chromiumPath() string {
	for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

// TestObservability runs a real deployment with --http-address on every
// process, kills a nodehost, and follows the kill and the repair through
// /metrics, /api/v1 (compared with drummercmd -o json) and the dashboard
// in headless chromium (skipped without chromium; CI installs it).
// Screenshots go to $DRUMMER_SCREENSHOTS (default: the test's temp dir).
func TestObservability(t *testing.T) {
	const nShards = 6
	c := cluster(t, 4, func(o *testcluster.Options) { o.HTTPAddresses = true })
	waitHosts(t, c, 4, 2*time.Minute)
	cli(t, c, "config", "set", "suspect_timeout=2s", "dead_timeout=6s")
	cli(t, c, "shard", "create", "--shard-id", "1", "--count", fmt.Sprint(nShards), "--replicas", "3", "--app", "kv")
	cli(t, c, "launch")
	cli(t, c, "wait", "--healthy", "--timeout", "180s")
	w := newWeb(t, c)
	w.waitMetrics(c, time.Minute, map[string]float64{
		`drummer_hosts{admin_state="active",state="up"}`:   4,
		`drummer_hosts{admin_state="active",state="dead"}`: 0,
		`drummer_shards{health="healthy"}`:                 nShards,
	})
	// Nodehosts serve their metrics too.
	waitUntil(t, time.Minute, "a nodehost's replicas in its /metrics", func() (bool, string) {
		code, body := w.get("https://" + c.Nodehosts[0].HTTPAddr + "/metrics")
		n := metric(body, `drummer_nodehost_replicas{role="leader"}`) + metric(body, `drummer_nodehost_replicas{role="follower"}`)
		return code == 200 && n > 0 && strings.Contains(body, "drummer_nodehost_orders_executed_total{"), fmt.Sprint(code, " replicas ", n)
	})
	leader := w.leaderURL(c)
	compareAPIWithCLI(t, c, w, leader)

	var b *browser
	if path := chromiumPath(); path != "" {
		b = newBrowser(t, path)
		b.open(leader + "/?token=" + w.token)
		b.waitText(`#hosts tbody`, "up")
		if n := b.count(`#hosts tbody tr[data-host]`); n != 4 {
			t.Errorf("hosts table has %d rows, want 4", n)
		}
		b.open(leader + "/shards")
		if n := b.count(`table.shards tbody tr[data-shard]`); n != nShards {
			t.Errorf("shards table has %d rows, want %d", n, nShards)
		}
		b.click(`table.shards tbody tr[data-shard="1"] a.shard-link`)
		b.waitText(`#shard-id`, "1")
		b.waitText(`#shard-health`, "healthy")
		b.waitVisible(`#explanation li`)
		b.waitVisible(`#members tbody tr`)
		b.screenshot("dashboard-shard.png")
		b.open(leader + "/")
		b.screenshot("dashboard-overview-healthy.png")
	} else {
		t.Log("chromium not installed: skipping the browser part (apt-get install -y chromium)")
	}

	// Kill a nodehost that holds replicas.
	victim := c.Nodehosts[1]
	victimID := hostOf(t, c, victim)
	victim.Kill()
	t.Logf("killed %s (%s)", victim.Name, victimID)
	if b != nil {
		b.open(leader + "/")
		b.mark()
		b.waitText(fmt.Sprintf(`#hosts tr[data-raft=%q] td.state`, victim.RaftAddr), "dead")
		b.screenshot("dashboard-host-dead.png")
		// In a second tab, a shard of the dead host and what the planner
		// says of it (the first tab keeps refreshing in place).
		shard := newTab(b)
		shard.open(leader + "/shards/1")
		shard.waitVisible(`#explanation li`)
		shard.screenshot("dashboard-shard-repair.png")
	}
	w.waitMetrics(c, 2*time.Minute, map[string]float64{
		`drummer_hosts{admin_state="active",state="up"}`:   3,
		`drummer_hosts{admin_state="active",state="dead"}`: 1,
	})
	// The repairs bring every shard back to health on the three others.
	w.waitMetrics(c, 4*time.Minute, map[string]float64{
		`drummer_shards{health="healthy"}`:          nShards,
		`drummer_shards{health="under_replicated"}`: 0,
		`drummer_shards{health="unavailable"}`:      0,
	})
	_, body := w.get(leader + "/metrics")
	if v := metric(body, `drummer_repairs_finished_total{kind="replace",result="done"}`); v < 1 {
		t.Errorf("drummer_repairs_finished_total{kind=replace,result=done} = %v, want >= 1\n%s", v, grepLines(body, "drummer_repair"))
	}
	waitShards(t, c, time.Minute, "all healthy without the victim", allHealthyWithout(victimID, nShards))
	if b != nil {
		// Without reloading: the page refreshes itself in place.
		b.waitText(fmt.Sprintf(`#hosts tr[data-raft=%q] td.state`, victim.RaftAddr), "dead")
		b.waitText(`#shards-total`, fmt.Sprint(nShards))
		b.waitCond(`document.querySelectorAll("table.shards tbody tr[data-shard]").length === 0`, "no unhealthy shard listed")
		b.checkMark()
		b.screenshot("dashboard-overview.png")
	}
	compareAPIWithCLI(t, c, w, leader)
}

// compareAPIWithCLI checks that /api/v1 and drummercmd -o json say the
// same of hosts and shards (same field names; protojson writes 64-bit
// integers as strings).
func compareAPIWithCLI(t *testing.T, c *testcluster.Cluster, w *web, base string) {
	t.Helper()
	var apiHosts struct {
		Hosts []struct {
			ID          string `json:"id"`
			RaftAddress string `json:"raft_address"`
			State       string `json:"state"`
			AdminState  string `json:"admin_state"`
			Replicas    string `json:"replicas"`
		} `json:"hosts"`
	}
	var apiShards struct {
		Shards []struct {
			ShardID string `json:"shard_id"`
			Health  string `json:"health"`
			App     string `json:"app"`
			Members []struct {
				ReplicaID string `json:"replica_id"`
				HostID    string `json:"host_id"`
			} `json:"members"`
		} `json:"shards"`
	}
	// The two reads are not atomic: retry until both agree (the fleet
	// is settled when this is called).
	waitUntil(t, time.Minute, "/api/v1 to match drummercmd -o json", func() (bool, string) {
		code, body := w.get(base + "/api/v1/hosts")
		if code != 200 || json.Unmarshal([]byte(body), &apiHosts) != nil {
			return false, fmt.Sprint(code, body)
		}
		code, body = w.get(base + "/api/v1/shards")
		if code != 200 || json.Unmarshal([]byte(body), &apiShards) != nil {
			return false, fmt.Sprint(code, body)
		}
		var want, got []string
		for _, h := range hosts(t, c) {
			want = append(want, fmt.Sprintf("host %s %s %s %s %d", h.ID, h.RaftAddress, h.State, h.AdminState, h.Replicas))
		}
		for _, h := range apiHosts.Hosts {
			got = append(got, fmt.Sprintf("host %s %s %s %s %s", h.ID, h.RaftAddress, h.State, h.AdminState, h.Replicas))
		}
		for _, s := range shards(t, c) {
			var ms []string
			for _, m := range s.Members {
				ms = append(ms, fmt.Sprintf("%d@%s", m.ReplicaID, m.HostID))
			}
			slices.Sort(ms)
			want = append(want, fmt.Sprintf("shard %d %s %s %v", s.ShardID, s.App, s.Health, ms))
		}
		for _, s := range apiShards.Shards {
			var ms []string
			for _, m := range s.Members {
				ms = append(ms, m.ReplicaID+"@"+m.HostID)
			}
			slices.Sort(ms)
			got = append(got, fmt.Sprintf("shard %s %s %s %v", s.ShardID, s.App, s.Health, ms))
		}
		return slices.Equal(want, got), fmt.Sprintf("\ncli: %v\napi: %v", want, got)
	})
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// browser is one headless chromium tab.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string
}

func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Headless,
		chromedp.IgnoreCertErrors, chromedp.WindowSize(1400, 900), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	// Start the browser on the long-lived context: the context of the
	// first action owns the browser, and the later ones have timeouts.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	dir := os.Getenv("DRUMMER_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	return &browser{t: t, ctx: ctx, dir: dir}
}

// newTab opens another tab of b's browser.
func newTab(b *browser) *browser {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("new tab: %v", err)
	}
	return &browser{t: b.t, ctx: ctx, dir: b.dir}
}

func (b *browser) tctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, d)
}

func (b *browser) open(url string) {
	b.t.Helper()
	ctx, cancel := b.tctx(time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitReady("#content")); err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
}

func (b *browser) click(sel string) {
	b.t.Helper()
	ctx, cancel := b.tctx(time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(sel), chromedp.WaitReady("#content")); err != nil {
		b.t.Fatalf("click %s: %v", sel, err)
	}
}

func (b *browser) waitVisible(sel string) {
	b.t.Helper()
	ctx, cancel := b.tctx(time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(sel)); err != nil {
		b.t.Fatalf("wait for %s: %v", sel, err)
	}
}

func (b *browser) count(sel string) int {
	b.t.Helper()
	ctx, cancel := b.tctx(time.Minute)
	defer cancel()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
	if err != nil {
		b.t.Fatalf("count %s: %v", sel, err)
	}
	return n
}

// waitText waits until the element's text contains want (the page
// refreshing itself in between).
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	js := fmt.Sprintf(`(function(){var e=document.querySelector(%q); return !!e && e.textContent.indexOf(%q) >= 0;})()`, sel, want)
	b.waitCond(js, fmt.Sprintf("%s to show %q", sel, want))
}

func (b *browser) waitCond(js, what string) {
	b.t.Helper()
	ctx, cancel := b.tctx(4 * time.Minute)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(0))); err != nil {
		txt, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
		b.t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, txt)
	}
}

// mark tags the loaded document; checkMark fails if it was reloaded
// since.
func (b *browser) mark() {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`window.__drummerMark = true`)); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) checkMark() {
	b.t.Helper()
	ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`window.__drummerMark === true`))
	if err != nil || !ok {
		b.t.Fatalf("the page was reloaded (mark lost: %v %v); it should refresh in place", ok, err)
	}
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := b.tctx(time.Minute)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}
