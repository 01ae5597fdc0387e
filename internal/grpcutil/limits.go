package grpcutil

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Rate is a token bucket: PerSecond calls on average, Burst at once.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Limits bound what one unary call may cost a server: how long it may run,
// how large its request may be, and how often a caller may make it.
type Limits struct {
	// DefaultDeadline caps every call's context unless Deadlines names the
	// method (a zero there leaves that method's context alone).
	DefaultDeadline time.Duration
	Deadlines       map[string]time.Duration
	// DefaultMaxRequestBytes limits every request unless MaxRequestBytes
	// names the method (0: only the server's receive limit applies). The
	// server's grpc.MaxRecvMsgSize must be at least the largest limit.
	DefaultMaxRequestBytes int
	MaxRequestBytes        map[string]int
	// Rates limit the named methods per caller (Key).
	Rates map[string]Rate
	// Key names the caller a rate applies to (e.g. its certificate's
	// name); nil or "" shares one bucket per method.
	Key func(ctx context.Context) string
}

// maxKeys bounds the per-caller buckets kept per method.
const maxKeys = 4096

type limiters struct {
	mu      sync.Mutex
	buckets map[string]map[string]*rate.Limiter // method → caller → bucket
}

func (l *limiters) allow(method, key string, r Rate) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.buckets[method]
	if m == nil || len(m) >= maxKeys {
		// Forgetting idle callers' buckets only ever grants a fresh burst.
		m = map[string]*rate.Limiter{}
		l.buckets[method] = m
	}
	b := m[key]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(r.PerSecond), max(1, r.Burst))
		m[key] = b
	}
	return b.Allow()
}

// UnaryInterceptor enforces the limits. A request over its size limit is
// ResourceExhausted, and so is a call over its rate (retry after a pause).
func (lim Limits) UnaryInterceptor() grpc.UnaryServerInterceptor {
	ls := &limiters{buckets: map[string]map[string]*rate.Limiter{}}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		m := info.FullMethod
		maxBytes, ok := lim.MaxRequestBytes[m]
		if !ok {
			maxBytes = lim.DefaultMaxRequestBytes
		}
		if maxBytes > 0 {
			if pm, ok := req.(proto.Message); ok {
				if n := proto.Size(pm); n > maxBytes {
					return nil, status.Errorf(codes.ResourceExhausted, "%s: request of %d bytes is over this call's limit of %d bytes", m, n, maxBytes)
				}
			}
		}
		if r, ok := lim.Rates[m]; ok {
			key := ""
			if lim.Key != nil {
				key = lim.Key(ctx)
			}
			if !ls.allow(m, key, r) {
				return nil, status.Errorf(codes.ResourceExhausted, "%s: rate limit of %g calls/s (burst %d) exceeded; retry after a pause", m, r.PerSecond, r.Burst)
			}
		}
		d, ok := lim.Deadlines[m]
		if !ok {
			d = lim.DefaultDeadline
		}
		if d > 0 {
			if dl, has := ctx.Deadline(); !has || time.Until(dl) > d {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
		}
		return h(ctx, req)
	}
}
