package grpcutil

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestLimits(t *testing.T) {
	lim := Limits{
		DefaultDeadline:        time.Second,
		Deadlines:              map[string]time.Duration{"/s/Long": 0},
		DefaultMaxRequestBytes: 16,
		MaxRequestBytes:        map[string]int{"/s/Big": 1 << 20},
		Rates:                  map[string]Rate{"/s/Alloc": {PerSecond: 1, Burst: 2}},
		Key:                    func(ctx context.Context) string { s, _ := ctx.Value("who").(string); return s },
	}
	ic := lim.UnaryInterceptor()
	var gotDeadline time.Duration
	h := func(ctx context.Context, _ any) (any, error) {
		gotDeadline = -1
		if dl, ok := ctx.Deadline(); ok {
			gotDeadline = time.Until(dl)
		}
		return nil, nil
	}
	call := func(ctx context.Context, m string, req any) error {
		_, err := ic(ctx, req, &grpc.UnaryServerInfo{FullMethod: m}, h)
		return err
	}
	small, big := wrapperspb.String("x"), wrapperspb.String(strings.Repeat("x", 100))
	if err := call(context.Background(), "/s/A", small); err != nil || gotDeadline <= 0 || gotDeadline > time.Second {
		t.Errorf("default deadline: %v %v", gotDeadline, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := call(ctx, "/s/A", small); err != nil || gotDeadline > time.Second {
		t.Errorf("long client deadline not capped: %v", gotDeadline)
	}
	if err := call(context.Background(), "/s/Long", small); err != nil || gotDeadline != -1 {
		t.Errorf("exempt method got a deadline: %v", gotDeadline)
	}
	if err := call(context.Background(), "/s/A", big); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized request: %v", err)
	}
	if err := call(context.Background(), "/s/Big", big); err != nil {
		t.Errorf("large method refused: %v", err)
	}
	alice := context.WithValue(context.Background(), "who", "alice")
	bob := context.WithValue(context.Background(), "who", "bob")
	for i := range 2 {
		if err := call(alice, "/s/Alloc", small); err != nil {
			t.Fatalf("burst call %d: %v", i, err)
		}
	}
	if err := call(alice, "/s/Alloc", small); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("over the rate: %v", err)
	}
	if err := call(bob, "/s/Alloc", small); err != nil {
		t.Errorf("another caller's bucket: %v", err)
	}
}
