package auth

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// Rule says who may do something: every role at least Min on the
// admin > operator > viewer ladder (none of them when Min is RoleNone),
// and the roles in Also.
type Rule struct {
	Min  Role
	Also []Role
	// Refine, when set, may return a stricter rule for a particular
	// request (e.g. RemoveHost with force needs admin), with the reason.
	Refine func(req any) (Rule, string, bool)
}

// Allows reports whether role r satisfies the rule (Refine aside).
func (r Rule) Allows(role Role) bool {
	if r.Min != RoleNone && role.ladder() >= r.Min.ladder() && role.ladder() > 0 {
		return true
	}
	return slices.Contains(r.Also, role)
}

// Roles lists the roles the rule admits, in AllRoles order.
func (r Rule) Roles() []Role {
	var out []Role
	for _, role := range AllRoles {
		if r.Allows(role) {
			out = append(out, role)
		}
	}
	return out
}

func (r Rule) String() string {
	names := make([]string, 0, 6)
	for _, role := range r.Roles() {
		names = append(names, role.String())
	}
	if len(names) == 0 {
		return "no role"
	}
	return strings.Join(names, ", ")
}

// RuleFor is the rule admitting role and, for roles off the ladder, admin
// too (admin may do everything but report as a host or act as a server).
func RuleFor(role Role) Rule {
	if role.ladder() > 0 {
		return Rule{Min: role}
	}
	return Rule{Min: RoleAdmin, Also: []Role{role}}
}

var (
	viewer   = Rule{Min: RoleViewer}
	operator = Rule{Min: RoleOperator}
	admin    = Rule{Min: RoleAdmin}
	anyRole  = Rule{Min: RoleViewer, Also: []Role{RoleApp, RoleNodehost, RoleServer}}
	appData  = Rule{Min: RoleAdmin, Also: []Role{RoleApp}}
	// reads are viewer calls a follower's dashboard forwards to the leader
	// with its own server certificate, after checking the browser's role
	// itself (a server replicates the whole DB anyway).
	reads = Rule{Min: RoleViewer, Also: []Role{RoleServer}}
)

// MethodRule pairs a gRPC method with who may call it and what it does.
type MethodRule struct {
	Method string
	Rule   Rule
	// Note describes the call (and any request-dependent refinement).
	Note string
}

// methodTable is the one authorization table of every gRPC service
// Drummer serves. A method missing from it is refused (deny by default).
var methodTable = []MethodRule{
	{drummerpb.Drummer_Report_FullMethodName, Rule{Also: []Role{RoleNodehost}}, "a nodehost reports its own state (only for the raft address its certificate is bound to) and receives its orders"},
	{drummerpb.Drummer_GetClusterInfo_FullMethodName, reads, "deployment summary"},
	{drummerpb.Drummer_GetServerStatus_FullMethodName, Rule{Min: RoleViewer, Also: []Role{RoleServer}}, "one server's own view (endpoint status)"},
	{drummerpb.Drummer_SetRegions_FullMethodName, operator, "set the default region placement"},
	{drummerpb.Drummer_Launch_FullMethodName, operator, "launch the defined shards"},
	{drummerpb.Drummer_CreateShards_FullMethodName, operator, "define shards (rate limited)"},
	{drummerpb.Drummer_DeleteShards_FullMethodName, operator, "delete shards and their data"},
	{drummerpb.Drummer_ListShards_FullMethodName, reads, "list shards"},
	{drummerpb.Drummer_GetShard_FullMethodName, reads, "one shard's status"},
	{drummerpb.Drummer_LocateShards_FullMethodName, Rule{Min: RoleViewer, Also: []Role{RoleApp}}, "where shards run (applications locate their shards)"},
	{drummerpb.Drummer_ListHosts_FullMethodName, reads, "list nodehosts"},
	{drummerpb.Drummer_SetHostState_FullMethodName, operator, "cordon, uncordon, drain, maintenance"},
	{drummerpb.Drummer_RemoveHost_FullMethodName, Rule{Min: RoleOperator, Refine: func(req any) (Rule, string, bool) {
		if r, ok := req.(*drummerpb.RemoveHostRequest); ok && r.GetForce() {
			return admin, "with force", true
		}
		return Rule{}, "", false
	}}, "forget a dead or drained host; with `--force` (a host that still holds replicas) admin only"},
	{drummerpb.Drummer_ListRepairs_FullMethodName, reads, "repairs in flight and recent"},
	{drummerpb.Drummer_GetConfig_FullMethodName, reads, "runtime configuration"},
	{drummerpb.Drummer_SetConfig_FullMethodName, admin, "change runtime configuration"},
	{drummerpb.Drummer_GetBalanceStatus_FullMethodName, reads, "balancing: per host load against its fair share, moves in flight"},
	{drummerpb.Drummer_ListMembers_FullMethodName, reads, "list drummer servers"},
	{drummerpb.Drummer_AddMember_FullMethodName, admin, "add a drummer server"},
	{drummerpb.Drummer_RemoveMember_FullMethodName, admin, "remove a drummer server"},
	{drummerpb.Drummer_KVGet_FullMethodName, admin, "read the replicated KV map"},
	{drummerpb.Drummer_KVPut_FullMethodName, admin, "write the replicated KV map"},

	{drummerpb.NodehostAPI_OpenSession_FullMethodName, appData, "open a client session (rate limited)"},
	{drummerpb.NodehostAPI_CloseSession_FullMethodName, appData, "close a client session"},
	{drummerpb.NodehostAPI_Propose_FullMethodName, appData, "write to a shard"},
	{drummerpb.NodehostAPI_Read_FullMethodName, appData, "read a shard"},
	{drummerpb.NodehostAPI_ListLocalShards_FullMethodName, Rule{Min: RoleViewer, Also: []Role{RoleApp}}, "replicas on this nodehost"},

	{drummerpb.Monkey_SetPartition_FullMethodName, admin, "test-only fault injection (nodehost built with -tags dragonboat_monkeytest)"},
	{drummerpb.Monkey_SetDropRate_FullMethodName, admin, "test-only fault injection"},
	{drummerpb.Monkey_SetSlow_FullMethodName, admin, "test-only fault injection"},
	{drummerpb.Monkey_RequestSnapshot_FullMethodName, admin, "test-only fault injection"},
	{drummerpb.Monkey_GetReplicaStates_FullMethodName, admin, "test-only replica state dump"},

	{healthpb.Health_Check_FullMethodName, anyRole, "gRPC health check"},
	{healthpb.Health_List_FullMethodName, anyRole, "gRPC health check"},
	{healthpb.Health_Watch_FullMethodName, anyRole, "gRPC health check (stream)"},
	{reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName, viewer, "gRPC server reflection (grpcurl)"},
	{reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName, viewer, "gRPC server reflection (grpcurl)"},
}

var methodRules = func() map[string]Rule {
	m := make(map[string]Rule, len(methodTable))
	for _, r := range methodTable {
		if _, dup := m[r.Method]; dup {
			panic("auth: method listed twice: " + r.Method)
		}
		m[r.Method] = r.Rule
	}
	return m
}()

// MethodTable returns the authorization table (a copy).
func MethodTable() []MethodRule { return slices.Clone(methodTable) }

// RuleOf returns the rule of a full method name ("/pkg.Service/Method").
func RuleOf(method string) (Rule, bool) {
	r, ok := methodRules[method]
	return r, ok
}

// MethodTableMarkdown renders the table for docs/security.md.
func MethodTableMarkdown() string {
	var b strings.Builder
	b.WriteString("| method | roles allowed | what it does |\n|---|---|---|\n")
	for _, r := range methodTable {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", strings.TrimPrefix(r.Method, "/"), r.Rule, r.Note)
	}
	return b.String()
}

// HTTPRoute gives the rule for URL paths under Prefix ("/metrics" covers
// "/metrics" and "/metrics/...", "/debug/pprof/" the subtree).
type HTTPRoute struct {
	Prefix string
	Rule   Rule
	Note   string
	// Public routes are served without authentication (health probes,
	// which reveal nothing but up or not).
	Public bool
}

// DebugRoutes are the routes of the debug HTTP listener (--debug-address).
var DebugRoutes = []HTTPRoute{
	{Prefix: "/debug/pprof/", Rule: admin, Note: "profiles (CPU profiles and traces cost the process; they can reveal memory)"},
	{Prefix: "/metrics", Rule: viewer, Note: "dragonboat's Prometheus metrics"},
}

// healthRoutes are the probes of every --http-address listener.
var healthRoutes = []HTTPRoute{
	{Prefix: "/livez", Public: true, Note: "200 while the process runs"},
	{Prefix: "/readyz", Public: true, Note: "200 when the process can serve (see docs/observability.md), else 503 with the reason"},
}

// DrummerHTTPRoutes are the routes of a drummer server's --http-address
// listener. Each /api/v1 call is also checked against the method table,
// exactly like the gRPC call it maps to.
var DrummerHTTPRoutes = append(slices.Clone(healthRoutes),
	HTTPRoute{Prefix: "/metrics", Rule: viewer, Note: "Prometheus metrics (drummer's and dragonboat's)"},
	HTTPRoute{Prefix: "/api/v1/", Rule: viewer, Note: "the Drummer service as JSON (grpc-gateway); each call needs the role of its gRPC method (table above)"},
	HTTPRoute{Prefix: "/", Rule: viewer, Note: "the dashboard"},
)

// NodehostHTTPRoutes are the routes of a nodehost's --http-address
// listener.
var NodehostHTTPRoutes = append(slices.Clone(healthRoutes),
	HTTPRoute{Prefix: "/metrics", Rule: viewer, Note: "Prometheus metrics (the nodehost's and dragonboat's)"},
)

// HTTPRoutesMarkdown renders routes for docs/security.md.
func HTTPRoutesMarkdown(routes []HTTPRoute) string {
	var b strings.Builder
	b.WriteString("| path | roles allowed | what it serves |\n|---|---|---|\n")
	for _, r := range routes {
		who := r.Rule.String()
		if r.Public {
			who = "everyone (no authentication)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", r.Prefix, who, r.Note)
	}
	return b.String()
}

// allMethods is for tests: the methods in the table.
func allMethods() []string { return slices.Sorted(maps.Keys(methodRules)) }
