package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/pki"
	"github.com/drummerhq/drummer/internal/testcluster"
)

// refused reports whether a TLS connection to addr with cfg is refused:
// the handshake fails, or (TLS 1.3: the server judges the client's
// certificate after the client finished) the first read fails.
func refused(addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s accepted the connection (read: %v)", addr, err)
	}
	return nil
}

// plaintextRefused reports whether a plaintext client gets nothing useful
// from a TLS port: the server closes or answers with an error. (Raft
// ports answer nothing at all: dragonboat's listener abandons a failed
// handshake without closing the connection, see docs/security.md.)
func plaintextRefused(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = conn.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
	b, _ := io.ReadAll(conn)
	if s := string(b); strings.Contains(s, " 200 ") || strings.Contains(s, "dragonboat_") || strings.Contains(s, "\x00\x00") {
		return fmt.Errorf("%s answered plaintext: %q", addr, s)
	}
	return nil
}

// TestSecurity runs a deployment with mutual TLS on every listener and
// checks who gets in: shards launch and serve kv; a client without a
// certificate, with a certificate of another CA, or speaking plaintext is
// refused on the drummer API, the NodehostAPI, both Raft transports and
// the debug listeners; roles are enforced (a viewer lists but cannot
// delete, exit 6); a nodehost certificate cannot call operator RPCs or
// report as another host; a rotated certificate is served without a
// restart.
func TestSecurity(t *testing.T) {
	c := cluster(t, 3, func(o *testcluster.Options) { o.DebugAddresses = true })
	waitHosts(t, c, 3, 2*time.Minute)
	cli(t, c, "shard", "create", "--shard-id", "1", "--count", "3", "--replicas", "3", "--app", "kv")
	cli(t, c, "launch")
	cli(t, c, "wait", "--healthy", "--timeout", "120s")

	ctx := ctxFor(t, 5*time.Minute)
	app, err := client.New(ctx, client.Config{Endpoints: []string{c.Endpoints}, Security: c.Security("app")})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if err := app.KV(1).Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("kv put over mTLS: %v", err)
	}
	if v, ok, err := app.KV(1).Get(ctx, []byte("k")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("kv get over mTLS: %q %v %v", v, ok, err)
	}

	t.Run("roles", func(t *testing.T) {
		r := c.CLIAs(ctx, "viewer", "shard", "list")
		if r.Code != 0 {
			t.Fatalf("viewer shard list: %s", r)
		}
		r = c.CLIAs(ctx, "viewer", "shard", "delete", "1", "--yes")
		if r.Code != 6 || !strings.Contains(r.Stderr, "PermissionDenied") {
			t.Fatalf("viewer shard delete: want exit 6, got %s", r)
		}
		r = c.CLIAs(ctx, "operator", "config", "set", "dead_timeout=40s")
		if r.Code != 6 {
			t.Fatalf("operator config set: want exit 6, got %s", r)
		}
		r = c.CLIAs(ctx, "nodehost-1", "shard", "delete", "1", "--yes")
		if r.Code != 6 {
			t.Fatalf("nodehost certificate shard delete: want exit 6, got %s", r)
		}
		r = c.CLIAs(ctx, "app", "kv", "get", "--shard-id", "1", "k")
		if r.Code != 0 || !strings.Contains(r.Stdout, "v") {
			t.Fatalf("app kv get: %s", r)
		}
		r = c.CLIAs(ctx, "viewer", "kv", "get", "--shard-id", "1", "k")
		if r.Code != 6 {
			t.Fatalf("viewer kv get: want exit 6, got %s", r)
		}
		if got := shards(t, c); len(got) != 3 {
			t.Fatalf("refused calls changed the shards: %d", len(got))
		}
	})

	t.Run("a host speaks only for itself", func(t *testing.T) {
		src, err := auth.NewSource(auth.SourceOptions{Files: c.Files("nodehost-1")})
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(c.Drummers[0].GRPCAddr, grpc.WithTransportCredentials(src.ClientCredentials(auth.RoleServer)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		d := drummerpb.NewDrummerClient(cc)
		if _, err := d.DeleteShards(ctx, &drummerpb.DeleteShardsRequest{ShardIds: []uint64{1}}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("nodehost DeleteShards: %v", err)
		}
		if _, err := d.RemoveHost(ctx, &drummerpb.RemoveHostRequest{HostId: hostOf(t, c, c.Nodehosts[1]), Force: true}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("nodehost RemoveHost: %v", err)
		}
		other := c.Nodehosts[1]
		forged := &drummerpb.ReportRequest{HostId: "00000000-0000-4000-8000-000000000001", RaftAddress: other.RaftAddr, ApiAddress: other.GRPCAddr,
			Apps: []string{"kv"}, Session: 7, Seq: 1, Full: true}
		_, err = d.Report(ctx, forged)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "cannot report for raft address") {
			t.Errorf("report for another host's raft address: %v", err)
		}
		forged.HostId, forged.RaftAddress, forged.ApiAddress = hostOf(t, c, other), c.Nodehosts[0].RaftAddr, c.Nodehosts[0].GRPCAddr
		_, err = d.Report(ctx, forged)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is registered at raft address") {
			t.Errorf("report with another host's ID: %v", err)
		}
	})

	t.Run("refused on every listener", func(t *testing.T) {
		other := t.TempDir()
		if _, err := pki.CreateCA(other, 0, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		for _, r := range []auth.Role{auth.RoleAdmin} {
			if _, err := pki.Create(pki.Request{Dir: other, Name: "admin", Role: r}); err != nil {
				t.Fatal(err)
			}
		}
		mustSource := func(f auth.Files) *auth.Source {
			s, err := auth.NewSource(auth.SourceOptions{Files: f})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		ours := mustSource(c.Files("admin"))
		theirs := mustSource(auth.Files{CAFile: filepath.Join(other, "ca.crt"), CertFile: filepath.Join(other, "admin.crt"), KeyFile: filepath.Join(other, "admin.key")})
		viewer := mustSource(c.Files("viewer"))
		type listener struct {
			name, addr string
			http       bool
		}
		var ls []listener
		for _, n := range c.Drummers {
			ls = append(ls, listener{n.Name + " gRPC", n.GRPCAddr, false}, listener{n.Name + " Raft", n.RaftAddr, false}, listener{n.Name + " debug", n.DebugAddr, true})
		}
		for _, n := range c.Nodehosts {
			ls = append(ls, listener{n.Name + " API", n.GRPCAddr, false}, listener{n.Name + " Raft", n.RaftAddr, false}, listener{n.Name + " debug", n.DebugAddr, true})
		}
		for _, l := range ls {
			// Our CA, no client certificate.
			noCert := ours.ClientTLS("127.0.0.1")
			noCert.Certificates = nil
			noCert.NextProtos = []string{"h2", "http/1.1"}
			if l.http {
				// HTTP listeners accept web tokens instead: no certificate
				// is a 401, not a handshake failure.
				hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: noCert}}
				resp, err := hc.Get("https://" + l.addr + "/metrics")
				if err != nil || resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s without a certificate: %v %v", l.name, resp, err)
				}
				if resp != nil {
					resp.Body.Close()
				}
			} else if err := refused(l.addr, noCert); err != nil {
				t.Errorf("%s without a certificate: %v", l.name, err)
			}
			// A certificate of another CA (trusting ours to get that far).
			foreign := theirs.ClientTLS("127.0.0.1")
			foreign.RootCAs = ours.ClientTLS("127.0.0.1").RootCAs
			if err := refused(l.addr, foreign); err != nil {
				t.Errorf("%s with another CA's certificate: %v", l.name, err)
			}
			if err := plaintextRefused(l.addr); err != nil {
				t.Errorf("%s plaintext: %v", l.name, err)
			}
			// A valid client certificate never reaches a Raft port: only
			// the peers' own CA is trusted there.
			if strings.HasSuffix(l.name, "Raft") {
				if err := refused(l.addr, viewer.ClientTLS("127.0.0.1")); err != nil {
					t.Errorf("%s with a viewer certificate: %v", l.name, err)
				}
			}
		}
		// And the plaintext gRPC client gets an error, not an answer.
		cc, err := grpc.NewClient(c.Drummers[0].GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := drummerpb.NewDrummerClient(cc).ListShards(pctx, &drummerpb.ListShardsRequest{}); err == nil {
			t.Error("plaintext gRPC call answered")
		}
		// drummercmd with another CA's certificate (its CA file trusts both
		// CAs, so it gets as far as the server): exit 6.
		ourCA, _ := os.ReadFile(c.Files("admin").CAFile)
		theirCA, _ := os.ReadFile(filepath.Join(other, "ca.crt"))
		both := filepath.Join(other, "both.crt")
		if err := os.WriteFile(both, append(ourCA, theirCA...), 0o644); err != nil {
			t.Fatal(err)
		}
		r := testcluster.RunCLI(ctx, bins.Drummercmd, "--endpoints", c.Endpoints, "--command-timeout", "3s",
			"--ca-file", both, "--cert-file", filepath.Join(other, "admin.crt"), "--key-file", filepath.Join(other, "admin.key"), "shard", "list")
		if r.Code != 6 {
			t.Errorf("drummercmd with another CA's certificate: want exit 6, got %s", r)
		}
	})

	t.Run("rotation without restart", func(t *testing.T) {
		n := c.Drummers[0]
		admin, err := auth.NewSource(auth.SourceOptions{Files: c.Files("admin")})
		if err != nil {
			t.Fatal(err)
		}
		serial := func() string {
			cfg := admin.ClientTLS("127.0.0.1", auth.RoleServer)
			cfg.NextProtos = []string{"h2"}
			conn, err := tls.Dial("tcp", n.GRPCAddr, cfg)
			if err != nil {
				t.Fatalf("dial %s: %v", n.GRPCAddr, err)
			}
			defer conn.Close()
			return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
		}
		before := serial()
		if err := c.MakeCert(n.Name, auth.RoleServer, ""); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for serial() == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s still serves certificate %s a minute after rotation", n.Name, before)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if !n.Running() {
			t.Fatal("the server restarted")
		}
		cli(t, c, "shard", "list")
		if r := c.CLIAs(ctx, "viewer", "--endpoints", n.GRPCAddr, "endpoint", "status"); r.Code != 0 {
			t.Fatalf("endpoint status after rotation: %s", r)
		}
	})
}

// TestInsecureMode: the harness's --insecure mode still runs a whole
// deployment (plaintext, no authentication).
func TestInsecureMode(t *testing.T) {
	c := cluster(t, 3, func(o *testcluster.Options) { o.Insecure = true })
	waitHosts(t, c, 3, 2*time.Minute)
	cli(t, c, "shard", "create", "--shard-id", "1", "--count", "2", "--replicas", "3", "--app", "kv")
	cli(t, c, "launch")
	cli(t, c, "wait", "--healthy", "--timeout", "120s")
	cli(t, c, "kv", "put", "--shard-id", "1", "k", "v")
	if out := cli(t, c, "kv", "get", "--shard-id", "1", "k"); !strings.Contains(out, "v") {
		t.Fatalf("kv get: %s", out)
	}
}
