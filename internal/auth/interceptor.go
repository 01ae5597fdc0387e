package auth

import (
	"context"
	"maps"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Authorizer enforces the method table on a gRPC server: the caller's
// identity comes from its verified client certificate; a method without
// a rule is refused.
type Authorizer struct {
	rules map[string]Rule
}

// NewAuthorizer returns an authorizer for the method table plus extra
// rules (for services an embedder registers; they cannot override the
// table).
func NewAuthorizer(extra map[string]Rule) *Authorizer {
	rules := maps.Clone(methodRules)
	for m, r := range extra {
		if _, ok := rules[m]; !ok {
			rules[m] = r
		}
	}
	return &Authorizer{rules: rules}
}

// Covers reports whether a method has a rule.
func (a *Authorizer) Covers(method string) bool {
	_, ok := a.rules[method]
	return ok
}

// Authorize checks one call and returns ctx carrying the caller's
// identity. Errors are Unauthenticated (no verified certificate) or
// PermissionDenied (naming the roles that may call).
func (a *Authorizer) Authorize(ctx context.Context, method string, req any) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil, status.Error(codes.Unauthenticated, "no TLS client certificate: connect with --ca-file, --cert-file and --key-file (drummer cert create-client)")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "no verified TLS client certificate: connect with --ca-file, --cert-file and --key-file (drummer cert create-client)")
	}
	id, err := identityOfChains(ti.State.VerifiedChains)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate refused: %v", err)
	}
	rule, ok := a.rules[method]
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not open to any role (deny by default)", method)
	}
	if err := check(rule, method, id, req); err != nil {
		return nil, err
	}
	return NewContext(ctx, id), nil
}

// AuthorizeIdentity checks a call made on behalf of the identity in ctx
// (put there by HTTPMiddleware), for the HTTP/JSON gateway's in-process
// calls. Without an identity the call is Unauthenticated.
func (a *Authorizer) AuthorizeIdentity(ctx context.Context, method string, req any) error {
	id, ok := FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no authenticated caller: present a client certificate or a web token")
	}
	rule, ok := a.rules[method]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is not open to any role (deny by default)", method)
	}
	return check(rule, method, id, req)
}

func check(rule Rule, what string, id Identity, req any) error {
	if !rule.Allows(id.Role) {
		return status.Errorf(codes.PermissionDenied, "%s needs role %s; %s has role %s", what, rule, id.descr(), id.Role)
	}
	if rule.Refine != nil && req != nil {
		if stricter, why, ok := rule.Refine(req); ok && !stricter.Allows(id.Role) {
			return status.Errorf(codes.PermissionDenied, "%s %s needs role %s; %s has role %s", what, why, stricter, id.descr(), id.Role)
		}
	}
	return nil
}

func (id Identity) descr() string {
	if id.Via == "token" {
		return "web token " + quote(id.Name)
	}
	return "certificate " + quote(id.Name)
}

func quote(s string) string { return "\"" + s + "\"" }

// UnaryInterceptor authorizes unary calls.
func (a *Authorizer) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := a.Authorize(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor authorizes streaming calls (Refine does not apply:
// there is no single request).
func (a *Authorizer) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := a.Authorize(ss.Context(), info.FullMethod, nil)
		if err != nil {
			return err
		}
		return h(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }
