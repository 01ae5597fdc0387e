package cli

import (
	"bytes"
	"context"
	"net"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/drummerhq/drummer/api/drummerpb"
	"github.com/drummerhq/drummer/client"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNow is the clock of every test run.
var testNow = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func ms(t time.Time) int64 { return t.UnixMilli() }

// fakeDrummer is a scriptable Drummer server. An interceptor records every
// call and returns the error scripted for its method, if any.
type fakeDrummer struct {
	drummerpb.UnimplementedDrummerServer

	mu      sync.Mutex
	hosts   []*drummerpb.HostStatus
	shards  []*drummerpb.ShardStatus
	cfg     *drummerpb.RuntimeConfig
	members []*drummerpb.Member
	info    *drummerpb.ClusterInfo
	flight  []*drummerpb.Repair
	recent  []*drummerpb.Repair
	// balance is GetBalanceStatus's answer; its hosts are paged by the
	// request (page_token: the first host ID of the page).
	balance *drummerpb.GetBalanceStatusResponse
	// launched is returned as already_launched.
	launched bool

	// errs scripts an error per method name ("ListHosts").
	errs map[string]error
	// errTimes limits a scripted error to its first n calls (0: always).
	errTimes map[string]int
	// errUntil limits a scripted error to calls before a time.
	errUntil map[string]time.Time
	calls    []string
	reqs     map[string][]proto.Message

	// Dynamic answers (n counts calls of the method, from 1).
	listHosts  func(n int) []*drummerpb.HostStatus
	listShards func(n int, req *drummerpb.ListShardsRequest) []*drummerpb.ShardStatus
}

func newFake() *fakeDrummer {
	return &fakeDrummer{errs: map[string]error{}, errTimes: map[string]int{}, errUntil: map[string]time.Time{},
		reqs: map[string][]proto.Message{}}
}

func (f *fakeDrummer) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	name := path.Base(info.FullMethod)
	f.mu.Lock()
	f.calls = append(f.calls, name)
	f.reqs[name] = append(f.reqs[name], proto.Clone(req.(proto.Message)))
	err := f.errs[name]
	if until, ok := f.errUntil[name]; ok && !time.Now().Before(until) {
		err = nil
	}
	if err != nil && f.errTimes[name] > 0 {
		f.errTimes[name]--
		if f.errTimes[name] == 0 {
			delete(f.errs, name)
		}
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (f *fakeDrummer) setErr(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[method] = err
}

func (f *fakeDrummer) called(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs[method])
}

// lastReq returns the last request of a method (nil if never called).
func (f *fakeDrummer) lastReq(method string) proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs[method]
	if len(r) == 0 {
		return nil
	}
	return r[len(r)-1]
}

// mutations lists the state-changing calls made.
func (f *fakeDrummer) mutations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		switch c {
		case "ListHosts", "ListShards", "GetShard", "GetClusterInfo", "ListRepairs", "GetConfig", "ListMembers", "GetBalanceStatus":
		default:
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeDrummer) GetClusterInfo(context.Context, *drummerpb.GetClusterInfoRequest) (*drummerpb.ClusterInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.info != nil {
		return f.info, nil
	}
	// Like the server: the summary counts of the shards ListShards would
	// return (scripted by call number, as for ListShards).
	all := f.shards
	if f.listShards != nil {
		all = f.listShards(len(f.reqs["GetClusterInfo"]), &drummerpb.ListShardsRequest{})
	}
	info := &drummerpb.ClusterInfo{Shards: uint64(len(all)), Health: map[string]uint64{}}
	for _, s := range all {
		info.Health[s.Health]++
	}
	return info, nil
}

func (f *fakeDrummer) SetRegions(context.Context, *drummerpb.SetRegionsRequest) (*drummerpb.SetRegionsResponse, error) {
	return &drummerpb.SetRegionsResponse{}, nil
}

func (f *fakeDrummer) Launch(context.Context, *drummerpb.LaunchRequest) (*drummerpb.LaunchResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &drummerpb.LaunchResponse{AlreadyLaunched: f.launched}, nil
}

func (f *fakeDrummer) CreateShards(_ context.Context, r *drummerpb.CreateShardsRequest) (*drummerpb.CreateShardsResponse, error) {
	var ids []uint64
	for i := uint64(0); i < max(r.Count, 1); i++ {
		ids = append(ids, r.FirstShardId+i)
	}
	return &drummerpb.CreateShardsResponse{ShardIds: ids}, nil
}

func (f *fakeDrummer) DeleteShards(_ context.Context, r *drummerpb.DeleteShardsRequest) (*drummerpb.DeleteShardsResponse, error) {
	return &drummerpb.DeleteShardsResponse{ShardIds: r.ShardIds}, nil
}

func (f *fakeDrummer) ListShards(_ context.Context, r *drummerpb.ListShardsRequest) (*drummerpb.ListShardsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	all := f.shards
	if f.listShards != nil {
		all = f.listShards(len(f.reqs["ListShards"]), r)
	}
	var out []*drummerpb.ShardStatus
	for _, s := range all {
		if (len(r.ShardIds) == 0 || slices.Contains(r.ShardIds, s.ShardId)) && healthMatches(r.Health, s.Health) {
			out = append(out, s)
		}
	}
	return &drummerpb.ListShardsResponse{Shards: out, Total: uint64(len(out))}, nil
}

// healthMatches applies ListShards' health filter like the server does.
func healthMatches(want []string, h string) bool {
	if len(want) == 0 {
		return true
	}
	for _, w := range want {
		if w == h || (w == "unhealthy" && h != "healthy") {
			return true
		}
	}
	return false
}

func (f *fakeDrummer) GetShard(_ context.Context, r *drummerpb.GetShardRequest) (*drummerpb.ShardStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.shards {
		if s.ShardId == r.ShardId {
			return s, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "shard %d not found", r.ShardId)
}

func (f *fakeDrummer) ListHosts(context.Context, *drummerpb.ListHostsRequest) (*drummerpb.ListHostsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listHosts != nil {
		return &drummerpb.ListHostsResponse{Hosts: f.listHosts(len(f.reqs["ListHosts"]))}, nil
	}
	return &drummerpb.ListHostsResponse{Hosts: f.hosts}, nil
}

func (f *fakeDrummer) SetHostState(_ context.Context, r *drummerpb.SetHostStateRequest) (*drummerpb.SetHostStateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.hosts {
		if h.Id == r.HostId {
			h = proto.CloneOf(h)
			switch r.Action {
			case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_CORDON:
				h.AdminState = "cordoned"
			case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_UNCORDON, drummerpb.HostAdminAction_HOST_ADMIN_ACTION_END_MAINTENANCE:
				h.AdminState = "active"
				h.MaintenanceUntilUnixMs = 0
			case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_DRAIN:
				h.AdminState = "draining"
			case drummerpb.HostAdminAction_HOST_ADMIN_ACTION_MAINTENANCE:
				h.AdminState = "maintenance"
				h.MaintenanceUntilUnixMs = ms(testNow) + int64(r.DurationMs)
			}
			return &drummerpb.SetHostStateResponse{Host: h}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "host %s not found", r.HostId)
}

func (f *fakeDrummer) RemoveHost(context.Context, *drummerpb.RemoveHostRequest) (*drummerpb.RemoveHostResponse, error) {
	return &drummerpb.RemoveHostResponse{}, nil
}

func (f *fakeDrummer) ListRepairs(context.Context, *drummerpb.ListRepairsRequest) (*drummerpb.ListRepairsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &drummerpb.ListRepairsResponse{InFlight: f.flight, Recent: f.recent}, nil
}

func (f *fakeDrummer) GetConfig(context.Context, *drummerpb.GetConfigRequest) (*drummerpb.RuntimeConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfg == nil {
		return &drummerpb.RuntimeConfig{}, nil
	}
	return f.cfg, nil
}

func (f *fakeDrummer) SetConfig(context.Context, *drummerpb.SetConfigRequest) (*drummerpb.RuntimeConfig, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfg == nil {
		return &drummerpb.RuntimeConfig{}, nil
	}
	return f.cfg, nil
}

func (f *fakeDrummer) GetBalanceStatus(_ context.Context, r *drummerpb.GetBalanceStatusRequest) (*drummerpb.GetBalanceStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.balance == nil {
		return &drummerpb.GetBalanceStatusResponse{}, nil
	}
	out := proto.CloneOf(f.balance)
	size := int(r.GetPageSize())
	if size == 0 {
		size = 500
	}
	out.Hosts = nil
	for _, h := range f.balance.GetHosts() {
		if h.GetHostId() < r.GetPageToken() {
			continue
		}
		if len(out.Hosts) == size {
			out.NextPageToken = h.GetHostId()
			break
		}
		out.Hosts = append(out.Hosts, h)
	}
	return out, nil
}

func (f *fakeDrummer) ListMembers(context.Context, *drummerpb.ListMembersRequest) (*drummerpb.ListMembersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &drummerpb.ListMembersResponse{Members: f.members}, nil
}

func (f *fakeDrummer) AddMember(_ context.Context, r *drummerpb.AddMemberRequest) (*drummerpb.AddMemberResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := append(slices.Clone(f.members), &drummerpb.Member{ReplicaId: r.ReplicaId, RaftAddress: r.RaftAddress, GrpcAddress: r.GrpcAddress, Role: "voter"})
	return &drummerpb.AddMemberResponse{Members: ms}, nil
}

func (f *fakeDrummer) RemoveMember(_ context.Context, r *drummerpb.RemoveMemberRequest) (*drummerpb.RemoveMemberResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ms []*drummerpb.Member
	for _, m := range f.members {
		if m.ReplicaId != r.ReplicaId {
			ms = append(ms, m)
		}
	}
	return &drummerpb.RemoveMemberResponse{Members: ms}, nil
}

// serve starts a gRPC server for f on 127.0.0.1 and returns its address.
func serve(t testing.TB, f *fakeDrummer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(f.intercept))
	drummerpb.RegisterDrummerServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// follower is a drummer server that is not the scheduler leader: it
// answers every call with UNAVAILABLE and names the leader in the trailer.
type follower struct {
	mu     sync.Mutex
	calls  int
	leader string
}

func (fl *follower) intercept(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
	fl.mu.Lock()
	fl.calls++
	leader := fl.leader
	fl.mu.Unlock()
	if leader != "" {
		if err := grpc.SetTrailer(ctx, metadata.Pairs(client.LeaderTrailer, leader)); err != nil {
			return nil, err
		}
	}
	return nil, status.Error(codes.Unavailable, "not the scheduler leader")
}

func serveFollower(t *testing.T, leader string) (string, *follower) {
	t.Helper()
	fl := &follower{leader: leader}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(fl.intercept))
	drummerpb.RegisterDrummerServer(s, &drummerpb.UnimplementedDrummerServer{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), fl
}

// deadAddress returns a 127.0.0.1 address nothing listens on.
func deadAddress(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

type result struct {
	code           int
	stdout, stderr string
}

type runOpts struct {
	env   map[string]string
	stdin string
	// tty marks stdout (and stdin, stderr) as terminals.
	tty bool
}

// run runs drummercmd in-process with args.
func runCLI(t testing.TB, o runOpts, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	stdin := strings.NewReader(o.stdin)
	code := run(args, options{
		stdin:  stdin,
		stdout: &stdout,
		stderr: &stderr,
		env: func(k string) string {
			if v, ok := o.env[k]; ok || k != EnvInsecure {
				return v
			}
			return "true" // the fake servers are plaintext
		},
		isTerminal: func(s any) bool {
			return o.tty && (s == &stdout || s == &stderr || s == stdin)
		},
		now: func() time.Time { return testNow },
	})
	return result{code, stdout.String(), stderr.String()}
}

// runAt runs drummercmd against endpoint with short timeouts.
func runAt(t *testing.T, endpoint string, args ...string) result {
	t.Helper()
	return runCLI(t, runOpts{}, append([]string{"--endpoints", endpoint, "--command-timeout", "5s"}, args...)...)
}

func (r result) wantCode(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

// Fixtures.

const (
	hostA = "3f2a9c1e-0000-4000-8000-000000000001"
	hostB = "3f2b7d00-0000-4000-8000-000000000002"
	hostC = "c0ffee00-0000-4000-8000-000000000003"
)

func fixtureHosts() []*drummerpb.HostStatus {
	return []*drummerpb.HostStatus{
		{Id: hostC, RaftAddress: "10.0.0.3:7001", ApiAddress: "10.0.0.3:7011", State: "dead", AdminState: "active",
			Replicas: 0, Explanation: "silent for 10m"},
		{Id: hostA, RaftAddress: "10.0.0.1:7001", ApiAddress: "10.0.0.1:7011", Labels: map[string]string{"region": "r1", "zone": "a"},
			State: "up", AdminState: "active", Replicas: 3, LastHeartbeatUnixMs: ms(testNow.Add(-2 * time.Second)), Apps: []string{"kv"}},
		{Id: hostB, RaftAddress: "10.0.0.2:7001", ApiAddress: "10.0.0.2:7011", Labels: map[string]string{"region": "r2"},
			State: "suspect", AdminState: "cordoned", Replicas: 2, LastHeartbeatUnixMs: ms(testNow.Add(-30 * time.Second))},
	}
}

func healthyShard(id uint64) *drummerpb.ShardStatus {
	return &drummerpb.ShardStatus{
		ShardId: id, App: "kv", ReplicasDesired: 3, Health: "healthy", LeaderReplicaId: 1, Term: 4, ConfigChangeId: 9,
		Members: []*drummerpb.MemberStatus{
			{ReplicaId: 1, HostId: hostA, RaftAddress: "10.0.0.1:7001", ApiAddress: "10.0.0.1:7011", Role: "voter", State: "live", IsLeader: true},
			{ReplicaId: 2, HostId: hostB, RaftAddress: "10.0.0.2:7001", ApiAddress: "10.0.0.2:7011", Role: "voter", State: "live"},
			{ReplicaId: 3, HostId: hostC, RaftAddress: "10.0.0.3:7001", ApiAddress: "10.0.0.3:7011", Role: "voter", State: "live"},
		},
	}
}

func shardWithHealth(id uint64, health string) *drummerpb.ShardStatus {
	s := healthyShard(id)
	s.Health = health
	if health != "healthy" {
		s.Explanation = []string{"replica 3 on 10.0.0.3:7001 dead for 5m0s"}
		s.Members[2].State = "dead"
	}
	return s
}

func repairingShard() *drummerpb.ShardStatus {
	s := shardWithHealth(7, "under_replicated")
	s.Regions = map[string]uint32{"r1": 2, "r2": 1}
	s.Explanation = []string{"replica 3 on 10.0.0.3:7001 dead for 5m0s", "repair 12 replacing it"}
	s.Repair = &drummerpb.Repair{
		Id: 12, ShardId: 7, Kind: "repair", OldReplicaId: 3, OldHostId: hostC, NewReplicaId: 4, NewHostId: hostB,
		Step: "catch_up", StepIndex: 3, StepCount: 6,
		StartedUnixMs: ms(testNow.Add(-time.Minute)), StepDeadlineUnixMs: ms(testNow.Add(42 * time.Second)),
	}
	return s
}

// wantKV checks a "Key:   value" line of key-value output.
func wantKV(t *testing.T, out, key, value string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `: +` + regexp.QuoteMeta(value) + `$`)
	if !re.MatchString(out) {
		t.Errorf("no line %q: %q in:\n%s", key, value, out)
	}
}
