package web_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/dashboard"
	"github.com/drummerhq/drummer/internal/devcluster"
	"github.com/drummerhq/drummer/internal/logging"
	"github.com/drummerhq/drummer/internal/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// secureCluster is an in-process deployment with mutual TLS, HTTP
// listeners and nodehosts agents, plus an HTTPS client trusting its CA.
func secureCluster(t *testing.T, nodehosts int) (*devcluster.Cluster, *http.Client, string) {
	t.Helper()
	log, _ := logging.New(os.Stderr, "text", "warn")
	certs := filepath.Join(t.TempDir(), "certs")
	if _, err := pki.CreateCA(certs, 0, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	var c *devcluster.Cluster
	var err error
	for range 10 {
		base := 20000 + rand.IntN(400)*100
		for i := 1; i <= 3; i++ {
			if _, err := pki.Create(pki.Request{Dir: certs, Name: fmt.Sprintf("drummer-%d", i), Role: auth.RoleServer, Hosts: []string{"127.0.0.1"}, Overwrite: true}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 1; i <= nodehosts; i++ {
			raft, _ := devcluster.NodehostAddrs("127.0.0.1", base, i)
			if _, err := pki.Create(pki.Request{Dir: certs, Name: fmt.Sprintf("nodehost-%d", i), Role: auth.RoleNodehost, RaftAddress: raft, Overwrite: true}); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		c, err = devcluster.Start(ctx, devcluster.Options{Nodehosts: nodehosts, BasePort: base, DataDir: t.TempDir(), Logger: log,
			CertsDir: certs, HTTP: true, Dashboard: dashboard.Handler(dashboard.Options{})})
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	pem, err := os.ReadFile(filepath.Join(certs, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return c, &http.Client{Transport: tr, Timeout: 20 * time.Second}, certs
}

func get(t *testing.T, hc *http.Client, url, token string) (int, string) {
	t.Helper()
	return do(t, hc, http.MethodGet, url, token, "")
}

func do(t *testing.T, hc *http.Client, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, d time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, s := f()
		if ok {
			return
		}
		last = s
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s; last: %s", d, what, last)
}

// TestHTTPListener covers a drummer server's --http-address: health
// probes open to all, metrics and the JSON API behind tokens, the method
// table applied to /api/v1 calls, and followers answering reads.
func TestHTTPListener(t *testing.T) {
	c, hc, certs := secureCluster(t, 3)
	viewer, err := pki.CreateToken(certs, auth.RoleViewer, "test-viewer", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	urls := c.URLs()
	if len(urls) != 3 || !strings.HasPrefix(urls[0], "https://") {
		t.Fatalf("URLs = %v, want 3 https URLs", urls)
	}
	if code, body := get(t, hc, urls[0]+"/livez", ""); code != 200 {
		t.Fatalf("/livez without credentials: %d %s", code, body)
	}
	waitFor(t, time.Minute, "every server ready", func() (bool, string) {
		for _, u := range urls {
			if code, body := get(t, hc, u+"/readyz", ""); code != 200 {
				return false, u + ": " + body
			}
		}
		return true, ""
	})
	if code, _ := get(t, hc, urls[0]+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without credentials: %d, want 401", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var leaderURL, followerURL string
	for i, s := range c.Servers {
		if s == leader {
			leaderURL = urls[i]
		} else if followerURL == "" {
			followerURL = urls[i]
		}
	}
	waitFor(t, time.Minute, "3 hosts up in /metrics", func() (bool, string) {
		code, body := get(t, hc, leaderURL+"/metrics", viewer)
		return code == 200 && strings.Contains(body, `drummer_hosts{admin_state="active",state="up"} 3`), fmt.Sprint(code, " ", grep(body, "drummer_hosts{"))
	})
	_, body := get(t, hc, leaderURL+"/metrics", viewer)
	for _, want := range []string{"drummer_is_leader 1", `drummer_shards{health="healthy"} 0`, "drummer_db_applied_index ", "go_goroutines ", "dragonboat_raftnode_has_leader"} {
		if !strings.Contains(body, want) {
			t.Errorf("leader /metrics lacks %q", want)
		}
	}
	_, body = get(t, hc, followerURL+"/metrics", viewer)
	if !strings.Contains(body, "drummer_is_leader 0") || strings.Contains(body, "drummer_hosts{") {
		t.Errorf("follower /metrics should say is_leader 0 and leave the fleet counts to the leader:\n%s", grep(body, "drummer_"))
	}

	// The JSON API, on the leader and (forwarded) on a follower.
	for _, u := range []string{leaderURL, followerURL} {
		var code int
		var body string
		waitFor(t, time.Minute, u+"/api/v1/hosts answers", func() (bool, string) {
			code, body = get(t, hc, u+"/api/v1/hosts", viewer)
			return code == 200, body
		})
		var hosts struct {
			Hosts []struct {
				ID         string `json:"id"`
				State      string `json:"state"`
				AdminState string `json:"admin_state"`
			} `json:"hosts"`
			Total string `json:"total"`
		}
		if err := json.Unmarshal([]byte(body), &hosts); err != nil {
			t.Fatal(err)
		}
		if len(hosts.Hosts) != 3 || hosts.Total != "3" || hosts.Hosts[0].AdminState != "active" {
			t.Errorf("%s/api/v1/hosts = %s", u, body)
		}
	}
	// Balancing status, on the leader and (forwarded) on a follower.
	for _, u := range []string{leaderURL, followerURL} {
		code, body := get(t, hc, u+"/api/v1/balance?page_size=2", viewer)
		var bal struct {
			Settings struct {
				Replicas    bool   `json:"replicas"`
				CooldownMs  string `json:"cooldown_ms"`
				ThresholdPc uint32 `json:"threshold_pct"`
			} `json:"settings"`
			Hosts []struct {
				HostID string `json:"host_id"`
			} `json:"hosts"`
			NextPageToken string `json:"next_page_token"`
		}
		if err := json.Unmarshal([]byte(body), &bal); code != 200 || err != nil || !bal.Settings.Replicas ||
			bal.Settings.CooldownMs != "60000" || bal.Settings.ThresholdPc != 5 || len(bal.Hosts) != 2 || bal.NextPageToken == "" {
			t.Errorf("%s/api/v1/balance?page_size=2 = %d %s (%v)", u, code, body, err)
		}
	}
	// A viewer may not launch: the method table applies to /api/v1.
	code, body := do(t, hc, http.MethodPost, leaderURL+"/api/v1/launch", viewer, "{}")
	if code != http.StatusForbidden || !strings.Contains(body, "needs role") {
		t.Errorf("viewer POST /api/v1/launch: %d %s, want 403 naming the roles", code, body)
	}
	operator, err := pki.CreateToken(certs, auth.RoleOperator, "test-operator", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	code, body = do(t, hc, http.MethodPost, leaderURL+"/api/v1/launch", operator, "{}")
	if code != 200 || !strings.Contains(body, `"already_launched"`) {
		t.Errorf("operator POST /api/v1/launch: %d %s", code, body)
	}
	// A follower refuses writes, naming the leader.
	code, body = do(t, hc, http.MethodPost, followerURL+"/api/v1/launch", operator, "{}")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not the drummer leader") {
		t.Errorf("operator POST on a follower: %d %s, want 503 naming the leader", code, body)
	}
	code, body = get(t, hc, leaderURL+"/api/v1/shards/77", viewer)
	if code != http.StatusNotFound {
		t.Errorf("GET unknown shard: %d %s, want 404", code, body)
	}

	// The dashboard's pages, on the leader and on a follower.
	// The nodehosts register with their first reports to the leader:
	// wait for all three before reading the pages.
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, body := get(t, hc, leaderURL+"/", viewer); strings.Contains(body, `id="hosts-up">3<`) {
			break
		}
	}
	for _, u := range []string{leaderURL, followerURL} {
		for path, want := range map[string]string{
			"/":          `id="hosts-up">3<`,
			"/hosts":     `class="state state-up">up<`,
			"/shards":    `id="shards-total">0<`,
			"/repairs":   "In flight",
			"/shards/77": "shard 77 does not exist",
		} {
			code, body := get(t, hc, u+path, viewer)
			wantCode := 200
			if path == "/shards/77" {
				wantCode = 404
			}
			if code != wantCode || !strings.Contains(body, want) {
				t.Errorf("%s%s: %d, want %d and %q in:\n%s", u, path, code, wantCode, want, body)
			}
		}
	}
	if code, _ := get(t, hc, leaderURL+"/", ""); code != http.StatusUnauthorized {
		t.Errorf("dashboard without credentials: %d, want 401", code)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
