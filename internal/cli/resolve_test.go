package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drummerhq/drummer/api/drummerpb"
)

func TestResolveHost(t *testing.T) {
	hosts := fixtureHosts()
	hosts = append(hosts, &drummerpb.HostStatus{Id: "ab", RaftAddress: "10.0.0.9:7001"},
		&drummerpb.HostStatus{Id: "abc", RaftAddress: "10.0.0.8:7001"})
	for ref, want := range map[string]string{
		hostA:           hostA,
		"10.0.0.2:7001": hostB,
		"3f2a":          hostA,
		"3F2B":          hostB,
		"c":             hostC,
		"ab":            "ab", // exact ID beats being a prefix of "abc"
		"abc":           "abc",
		" 3f2a9 ":       hostA,
	} {
		h, err := resolveHost(hosts, ref)
		if err != nil {
			t.Errorf("resolveHost(%q): %v", ref, err)
			continue
		}
		if h.GetId() != want {
			t.Errorf("resolveHost(%q) = %s, want %s", ref, h.GetId(), want)
		}
	}
	for _, tc := range []struct {
		ref  string
		code int
		msg  string
	}{
		{"3f", ExitUsage, `host "3f" is ambiguous: it matches ` + hostA + " (10.0.0.1:7001), " + hostB},
		{"3f2", ExitUsage, "give more characters"},
		{"zz", ExitNotFound, `no host matches "zz"`},
		{"10.0.0.1:7002", ExitNotFound, "no host matches"},
		{"", ExitUsage, "empty host ID"},
	} {
		_, err := resolveHost(hosts, tc.ref)
		if err == nil {
			t.Errorf("resolveHost(%q) succeeded", tc.ref)
			continue
		}
		if exitCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("resolveHost(%q) = %q (exit %d), want exit %d and %q", tc.ref, err, exitCode(err), tc.code, tc.msg)
		}
	}
	// Many matches are cut short.
	var many []*drummerpb.HostStatus
	for i := range 8 {
		many = append(many, &drummerpb.HostStatus{Id: fmt.Sprintf("aa%02d", i)})
	}
	_, err := resolveHost(many, "aa")
	if err == nil || !strings.Contains(err.Error(), "and 3 more") {
		t.Errorf("resolveHost(many) = %v", err)
	}
}

func TestExitCodeForGRPC(t *testing.T) {
	want := map[codes.Code]int{
		codes.OK:                 0,
		codes.Canceled:           1,
		codes.Unknown:            1,
		codes.InvalidArgument:    2,
		codes.DeadlineExceeded:   3,
		codes.NotFound:           4,
		codes.AlreadyExists:      5,
		codes.PermissionDenied:   6,
		codes.ResourceExhausted:  1,
		codes.FailedPrecondition: 5,
		codes.Aborted:            5,
		codes.OutOfRange:         2,
		codes.Unimplemented:      1,
		codes.Internal:           1,
		codes.Unavailable:        3,
		codes.DataLoss:           1,
		codes.Unauthenticated:    6,
	}
	for c, code := range want {
		if got := ExitCodeForGRPC(c); got != code {
			t.Errorf("ExitCodeForGRPC(%v) = %d, want %d", c, got, code)
		}
	}
}

func TestExitCodeOfErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{nil, 0},
		{errors.New("x"), 1},
		{context.DeadlineExceeded, 3},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), 3},
		{status.Error(codes.NotFound, "x"), 4},
		{fmt.Errorf("wrapped: %w", status.Error(codes.AlreadyExists, "x")), 5},
		{usageErrorf("x"), 2},
		{withHint(errors.New("x"), "h"), 1},
		{withHint(status.Error(codes.Unavailable, "x"), "h"), 3},
		{withHint(codedErrorf(4, "x"), "h"), 4},
	} {
		if got := exitCode(tc.err); got != tc.code {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

// Every gRPC status an RPC fails with is mapped centrally; check it end to
// end for a read and a write command.
func TestRPCErrorExitCodes(t *testing.T) {
	f := newFake()
	f.hosts = fixtureHosts()
	addr := serve(t, f)
	for _, tc := range []struct {
		c    codes.Code
		exit int
	}{
		{codes.InvalidArgument, ExitUsage},
		{codes.OutOfRange, ExitUsage},
		{codes.NotFound, ExitNotFound},
		{codes.AlreadyExists, ExitConflict},
		{codes.FailedPrecondition, ExitConflict},
		{codes.Aborted, ExitConflict},
		// DeadlineExceeded and Unavailable make client.Conn retry until
		// --command-timeout; TestUnavailable covers them.
		{codes.Internal, ExitFailure},
		{codes.PermissionDenied, ExitPermission},
		{codes.Unauthenticated, ExitPermission},
		{codes.Unimplemented, ExitFailure},
	} {
		t.Run(tc.c.String(), func(t *testing.T) {
			f.setErr("GetClusterInfo", status.Error(tc.c, "scripted failure"))
			f.setErr("SetHostState", status.Error(tc.c, "scripted failure"))
			r := runAt(t, addr, "info")
			r.wantCode(t, tc.exit)
			wantContains(t, "stderr", r.stderr, "Error: get cluster info: scripted failure ("+tc.c.String()+")")
			if r.stdout != "" {
				t.Errorf("stdout not empty on failure: %q", r.stdout)
			}
			r = runAt(t, addr, "host", "cordon", "3f2a")
			r.wantCode(t, tc.exit)
			wantContains(t, "stderr", r.stderr, "cordon host "+hostA+" (10.0.0.1:7001): scripted failure")
			if tc.c == codes.Unimplemented {
				wantContains(t, "stderr", r.stderr, "Hint: the drummer server does not implement this call")
			}
		})
	}
	f.setErr("GetClusterInfo", nil)
	f.setErr("SetHostState", nil)
}
