package auth_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/pki"
)

// certsDir makes a CA and one certificate of every role.
func certsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.CreateCA(dir, 0, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, role auth.Role, raft string) {
		req := pki.Request{Dir: dir, Name: name, Role: role, RaftAddress: raft}
		if role == auth.RoleServer {
			req.Hosts = []string{"127.0.0.1", "localhost"}
		}
		if _, err := pki.Create(req); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	mk("server", auth.RoleServer, "")
	mk("nodehost", auth.RoleNodehost, "127.0.0.1:7201")
	for _, r := range []auth.Role{auth.RoleAdmin, auth.RoleOperator, auth.RoleViewer, auth.RoleApp} {
		mk(r.String(), r, "")
	}
	return dir
}

func files(dir, name string) auth.Files {
	return auth.Files{CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
}

func source(t *testing.T, dir, name string, roles ...auth.Role) *auth.Source {
	t.Helper()
	s, err := auth.NewSource(auth.SourceOptions{Files: files(dir, name), Roles: roles, CheckEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEveryMethodHasARule enumerates every method of every service a
// Drummer process serves and checks the table covers it (deny by default
// would otherwise refuse it to everyone).
func TestEveryMethodHasARule(t *testing.T) {
	descs := []grpc.ServiceDesc{
		drummerpb.Drummer_ServiceDesc, drummerpb.NodehostAPI_ServiceDesc, drummerpb.Monkey_ServiceDesc,
		healthpb.Health_ServiceDesc, reflectionv1.ServerReflection_ServiceDesc, reflectionv1alpha.ServerReflection_ServiceDesc,
	}
	n := 0
	for _, d := range descs {
		for _, m := range d.Methods {
			n++
			if _, ok := auth.RuleOf("/" + d.ServiceName + "/" + m.MethodName); !ok {
				t.Errorf("no rule for /%s/%s", d.ServiceName, m.MethodName)
			}
		}
		for _, m := range d.Streams {
			n++
			if _, ok := auth.RuleOf("/" + d.ServiceName + "/" + m.StreamName); !ok {
				t.Errorf("no rule for stream /%s/%s", d.ServiceName, m.StreamName)
			}
		}
	}
	if n != len(auth.MethodTable()) {
		t.Errorf("%d methods in the services, %d rules: the table names a method no service has", n, len(auth.MethodTable()))
	}
	if _, ok := auth.RuleOf("/drummer.v1.Drummer/NoSuchMethod"); ok {
		t.Error("unknown method has a rule")
	}
}

// TestSecurityDocListsEveryMethod keeps docs/security.md's role tables
// generated from the code's tables.
func TestSecurityDocListsEveryMethod(t *testing.T) {
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{auth.MethodTableMarkdown(), auth.HTTPRoutesMarkdown(auth.DebugRoutes),
		auth.HTTPRoutesMarkdown(auth.DrummerHTTPRoutes), auth.HTTPRoutesMarkdown(auth.NodehostHTTPRoutes)} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/security.md does not contain the current table; paste this in:\n%s", want)
		}
	}
}

func TestRules(t *testing.T) {
	cases := []struct {
		method string
		role   auth.Role
		ok     bool
	}{
		{drummerpb.Drummer_Report_FullMethodName, auth.RoleNodehost, true},
		{drummerpb.Drummer_Report_FullMethodName, auth.RoleAdmin, false},
		{drummerpb.Drummer_DeleteShards_FullMethodName, auth.RoleViewer, false},
		{drummerpb.Drummer_DeleteShards_FullMethodName, auth.RoleOperator, true},
		{drummerpb.Drummer_DeleteShards_FullMethodName, auth.RoleAdmin, true},
		{drummerpb.Drummer_DeleteShards_FullMethodName, auth.RoleNodehost, false},
		{drummerpb.Drummer_ListShards_FullMethodName, auth.RoleViewer, true},
		{drummerpb.Drummer_ListShards_FullMethodName, auth.RoleApp, false},
		{drummerpb.Drummer_LocateShards_FullMethodName, auth.RoleApp, true},
		{drummerpb.Drummer_SetConfig_FullMethodName, auth.RoleOperator, false},
		{drummerpb.Drummer_AddMember_FullMethodName, auth.RoleAdmin, true},
		{drummerpb.NodehostAPI_Propose_FullMethodName, auth.RoleApp, true},
		{drummerpb.NodehostAPI_Propose_FullMethodName, auth.RoleOperator, false},
		{drummerpb.NodehostAPI_Propose_FullMethodName, auth.RoleNodehost, false},
		{drummerpb.Drummer_GetServerStatus_FullMethodName, auth.RoleServer, true},
	}
	for _, c := range cases {
		r, _ := auth.RuleOf(c.method)
		if got := r.Allows(c.role); got != c.ok {
			t.Errorf("%s by %s: allowed=%v, want %v", c.method, c.role, got, c.ok)
		}
	}
	r, _ := auth.RuleOf(drummerpb.Drummer_RemoveHost_FullMethodName)
	if s, _, ok := r.Refine(&drummerpb.RemoveHostRequest{Force: true}); !ok || s.Allows(auth.RoleOperator) || !s.Allows(auth.RoleAdmin) {
		t.Error("RemoveHost --force must need admin")
	}
	if _, _, ok := r.Refine(&drummerpb.RemoveHostRequest{}); ok {
		t.Error("RemoveHost without force is refined")
	}
}

func TestSourceChecksTheCertificate(t *testing.T) {
	dir := certsDir(t)
	if _, err := auth.NewSource(auth.SourceOptions{Files: files(dir, "viewer"), Roles: []auth.Role{auth.RoleServer}}); err == nil || !strings.Contains(err.Error(), "has role viewer") {
		t.Errorf("wrong role accepted: %v", err)
	}
	if _, err := auth.NewSource(auth.SourceOptions{Files: files(dir, "nodehost"), RaftAddress: "127.0.0.1:9999"}); err == nil || !strings.Contains(err.Error(), "bound to raft address") {
		t.Errorf("nodehost certificate for another raft address accepted: %v", err)
	}
	f := files(dir, "admin")
	f.KeyFile = filepath.Join(dir, "viewer.key")
	if _, err := auth.NewSource(auth.SourceOptions{Files: f}); err == nil {
		t.Error("mismatched key accepted")
	}
	other := t.TempDir()
	if _, err := pki.CreateCA(other, 0, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	f = files(dir, "admin")
	f.CAFile = filepath.Join(other, "ca.crt")
	if _, err := auth.NewSource(auth.SourceOptions{Files: f}); err == nil || !strings.Contains(err.Error(), "not usable") {
		t.Errorf("certificate of another CA accepted: %v", err)
	}
	if err := auth.CheckMode(auth.Files{}, false); err == nil || !strings.Contains(err.Error(), "drummer cert create-ca") {
		t.Errorf("no certificates and no --insecure: %v", err)
	}
	if err := auth.CheckMode(files(dir, "admin"), true); err == nil {
		t.Error("certificates and --insecure accepted")
	}
	if err := auth.CheckMode(auth.Files{CAFile: "x"}, false); err == nil || !strings.Contains(err.Error(), "--cert-file") {
		t.Errorf("partial files: %v", err)
	}
}

// testServer serves health, reflection and a Drummer stub with the
// authorizer, on mutual TLS from src.
func testServer(t *testing.T, src *auth.Source) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := auth.NewAuthorizer(nil)
	s := grpc.NewServer(grpc.Creds(src.ServerCredentials()), grpc.UnaryInterceptor(a.UnaryInterceptor()), grpc.StreamInterceptor(a.StreamInterceptor()))
	drummerpb.RegisterDrummerServer(s, &stub{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

type stub struct {
	drummerpb.UnimplementedDrummerServer
}

func (stub) ListShards(ctx context.Context, _ *drummerpb.ListShardsRequest) (*drummerpb.ListShardsResponse, error) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no identity")
	}
	return &drummerpb.ListShardsResponse{Shards: []*drummerpb.ShardStatus{{App: id.Name}}}, nil
}

func (stub) DeleteShards(context.Context, *drummerpb.DeleteShardsRequest) (*drummerpb.DeleteShardsResponse, error) {
	return &drummerpb.DeleteShardsResponse{}, nil
}

func dial(t *testing.T, addr string, opt grpc.DialOption) drummerpb.DrummerClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return drummerpb.NewDrummerClient(cc)
}

func TestInterceptor(t *testing.T) {
	dir := certsDir(t)
	addr := testServer(t, source(t, dir, "server"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	viewer := dial(t, addr, grpc.WithTransportCredentials(source(t, dir, "viewer").ClientCredentials(auth.RoleServer)))
	resp, err := viewer.ListShards(ctx, &drummerpb.ListShardsRequest{})
	if err != nil || resp.Shards[0].App != "viewer" {
		t.Fatalf("viewer ListShards: %v %v", resp, err)
	}
	_, err = viewer.DeleteShards(ctx, &drummerpb.DeleteShardsRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "needs role admin, operator") {
		t.Errorf("viewer DeleteShards: %v", err)
	}
	_, err = viewer.Report(ctx, &drummerpb.ReportRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("viewer Report: %v", err)
	}
	op := dial(t, addr, grpc.WithTransportCredentials(source(t, dir, "operator").ClientCredentials(auth.RoleServer)))
	if _, err := op.DeleteShards(ctx, &drummerpb.DeleteShardsRequest{}); err != nil {
		t.Errorf("operator DeleteShards: %v", err)
	}
	if _, err := op.RemoveHost(ctx, &drummerpb.RemoveHostRequest{Force: true}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "with force") {
		t.Errorf("operator RemoveHost --force: %v", err)
	}
	// Health is open to every role, also as a stream.
	hc := healthpb.NewHealthClient(func() *grpc.ClientConn {
		cc, _ := grpc.NewClient(addr, grpc.WithTransportCredentials(source(t, dir, "nodehost").ClientCredentials()))
		t.Cleanup(func() { cc.Close() })
		return cc
	}())
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if err != nil {
		t.Errorf("nodehost health watch: %v", err)
	}
	// A client that expects a nodehost refuses the server's certificate.
	wrong := dial(t, addr, grpc.WithTransportCredentials(source(t, dir, "admin").ClientCredentials(auth.RoleNodehost)))
	if _, err := wrong.ListShards(ctx, &drummerpb.ListShardsRequest{}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "expected role") {
		t.Errorf("server certificate accepted as a nodehost: %v", err)
	}
	// Plaintext and no certificate are refused by the handshake.
	plain := dial(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if _, err := plain.ListShards(ctx, &drummerpb.ListShardsRequest{}); err == nil {
		t.Error("plaintext accepted")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("TLS without a client certificate: %v", err)
	}
}

func TestRotation(t *testing.T) {
	dir := certsDir(t)
	src := source(t, dir, "server")
	addr := testServer(t, src)
	serialOf := func() string {
		cfg := source(t, dir, "admin").ClientTLS("127.0.0.1", auth.RoleServer)
		cfg.NextProtos = []string{"h2"}
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serialOf()
	if _, err := pki.Create(pki.Request{Dir: dir, Name: "server", Role: auth.RoleServer, Hosts: []string{"127.0.0.1"}}); err == nil {
		t.Fatal("overwrite without --overwrite")
	}
	if _, err := pki.Create(pki.Request{Dir: dir, Name: "server", Role: auth.RoleServer, Hosts: []string{"127.0.0.1"}, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for serialOf() == before {
		if time.Now().After(deadline) {
			t.Fatal("rotated certificate not picked up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A broken file keeps the previous certificate in force.
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := src.Reload(); err == nil {
		t.Error("garbage loaded")
	}
	_ = serialOf()
}

func TestTokens(t *testing.T) {
	dir := certsDir(t)
	src := source(t, dir, "server")
	now := time.Now()
	tok, err := pki.CreateToken(dir, auth.RoleViewer, "dash", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := src.VerifyToken(tok, now)
	if err != nil || id.Role != auth.RoleViewer || id.Name != "dash" || id.Via != "token" {
		t.Fatalf("verify: %v %v", id, err)
	}
	if _, err := src.VerifyToken(tok, now.Add(2*time.Hour)); !errors.Is(err, auth.ErrBadToken) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	tampered := tok[:len(tok)-3] + "AAA"
	if _, err := src.VerifyToken(tampered, now); !errors.Is(err, auth.ErrBadToken) {
		t.Errorf("tampered signature: %v", err)
	}
	parts := strings.Split(tok, ".")
	mid := len(parts[1]) / 2
	flip := "A"
	if parts[1][mid] == 'A' {
		flip = "B"
	}
	forged := parts[0] + "." + parts[1][:mid] + flip + parts[1][mid+1:] + "." + parts[2]
	if _, err := src.VerifyToken(forged, now); !errors.Is(err, auth.ErrBadToken) {
		t.Errorf("changed claims: %v", err)
	}
	other := t.TempDir()
	if _, err := pki.CreateCA(other, 0, false, now); err != nil {
		t.Fatal(err)
	}
	foreign, _ := pki.CreateToken(other, auth.RoleAdmin, "x", time.Hour, now)
	if _, err := src.VerifyToken(foreign, now); !errors.Is(err, auth.ErrBadToken) {
		t.Errorf("token of another CA: %v", err)
	}
	for _, c := range []struct {
		role auth.Role
		ttl  time.Duration
	}{{auth.RoleNodehost, time.Hour}, {auth.RoleApp, time.Hour}, {auth.RoleViewer, 31 * 24 * time.Hour}, {auth.RoleViewer, 0}} {
		if _, err := pki.CreateToken(dir, c.role, "x", c.ttl, now); err == nil {
			t.Errorf("token with role %s ttl %s made", c.role, c.ttl)
		}
	}
	for _, junk := range []string{"", "dt1.", "dt1.a.b", "x.y.z", strings.Repeat("a", 5000)} {
		if _, err := src.VerifyToken(junk, now); !errors.Is(err, auth.ErrBadToken) {
			t.Errorf("junk %q: %v", junk, err)
		}
	}
}

func TestHTTPMiddleware(t *testing.T) {
	dir := certsDir(t)
	src := source(t, dir, "server")
	mw, err := auth.HTTPMiddleware(auth.HTTPOptions{Source: src, Routes: auth.DebugRoutes})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := auth.FromContext(r.Context())
		io.WriteString(w, "ok "+id.Name)
	}))
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = src.ServerTLS(tls.VerifyClientCertIfGiven, "http/1.1")
	srv.StartTLS()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")
	client := func(name string) *http.Client {
		cfg := &tls.Config{RootCAs: nil}
		if name != "" {
			cfg = source(t, dir, name).ClientTLS("127.0.0.1", auth.RoleServer)
		} else {
			cfg = source(t, dir, "admin").ClientTLS("127.0.0.1", auth.RoleServer)
			cfg.Certificates = nil
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	get := func(c *http.Client, path string, hdr map[string]string) (int, string, *http.Response) {
		req, _ := http.NewRequest("GET", "https://"+addr+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp
	}
	if code, body, _ := get(client("viewer"), "/metrics", nil); code != 200 || body != "ok viewer" {
		t.Errorf("viewer /metrics: %d %s", code, body)
	}
	if code, body, _ := get(client("viewer"), "/debug/pprof/heap", nil); code != 403 || !strings.Contains(body, "needs role admin") {
		t.Errorf("viewer pprof: %d %s", code, body)
	}
	if code, _, _ := get(client("admin"), "/debug/pprof/heap", nil); code != 200 {
		t.Errorf("admin pprof: %d", code)
	}
	if code, _, _ := get(client("admin"), "/other", nil); code != 403 {
		t.Errorf("uncovered path: %d", code)
	}
	if code, _, _ := get(client("viewer"), "/metrics/../debug/pprof/heap", nil); code == 200 {
		t.Error("path trick")
	}
	anon := client("")
	if code, _, _ := get(anon, "/metrics", nil); code != 401 {
		t.Errorf("no certificate, no token: %d", code)
	}
	tok, _ := pki.CreateToken(dir, auth.RoleViewer, "dash", time.Hour, time.Now())
	if code, body, _ := get(anon, "/metrics", map[string]string{"Authorization": "Bearer " + tok}); code != 200 || body != "ok dash" {
		t.Errorf("bearer: %d %s", code, body)
	}
	if code, _, _ := get(anon, "/metrics", map[string]string{"Authorization": "Bearer " + tok + "x"}); code != 401 {
		t.Errorf("bad bearer: %d", code)
	}
	code, _, resp := get(anon, "/metrics?token="+tok+"&x=1", nil)
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/metrics?x=1" {
		t.Fatalf("?token=: %d %s", code, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == auth.DefaultTokenCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie: %+v", cookie)
	}
	if code, body, _ := get(anon, "/metrics", map[string]string{"Cookie": cookie.Name + "=" + cookie.Value}); code != 200 || body != "ok dash" {
		t.Errorf("cookie: %d %s", code, body)
	}
	if code, _, _ := get(anon, "/debug/pprof/", map[string]string{"Authorization": "Bearer " + tok}); code != 403 {
		t.Errorf("viewer token on pprof: %d", code)
	}
	if _, err := auth.HTTPMiddleware(auth.HTTPOptions{}); err == nil {
		t.Error("middleware without Source or Insecure")
	}
}
