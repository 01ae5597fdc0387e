package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes of drummercmd. They are part of the CLI's interface: scripts
// rely on them, so never renumber.
const (
	// ExitOK: the command did what was asked.
	ExitOK = 0
	// ExitFailure: any other failure (internal server error, permission
	// denied, an aborted prompt, ...).
	ExitFailure = 1
	// ExitUsage: bad flags or arguments, caught locally or answered by the
	// server with InvalidArgument / OutOfRange. Nothing was changed.
	ExitUsage = 2
	// ExitUnavailable: no drummer server answered, no scheduler leader, or a
	// timeout (gRPC Unavailable / DeadlineExceeded, --timeout of a wait).
	ExitUnavailable = 3
	// ExitNotFound: the shard, host or member does not exist (NotFound).
	ExitNotFound = 4
	// ExitConflict: the request conflicts with the current state
	// (AlreadyExists, FailedPrecondition, Aborted).
	ExitConflict = 5
	// ExitPermission: the server refused the caller (PermissionDenied:
	// the certificate's role may not do this; Unauthenticated or a failed
	// TLS handshake: no acceptable certificate).
	ExitPermission = 6
)

// exitCodesHelp documents the exit codes; shown in the root command's help
// and kept in sync with docs/cli.md.
const exitCodesHelp = `Exit codes:
  0  success
  1  failure (anything not listed below)
  2  usage error: bad flags or arguments (also gRPC InvalidArgument, OutOfRange);
     nothing was changed
  3  unavailable or timed out: no drummer server answered, no scheduler leader,
     gRPC Unavailable or DeadlineExceeded, or a wait/drain --timeout expired
  4  not found: no such shard, host or member (gRPC NotFound)
  5  conflict with the current state: gRPC AlreadyExists, FailedPrecondition,
     Aborted (e.g. shard already exists, host still holds replicas)
  6  permission denied or unauthenticated: the certificate's role may not do
     this (gRPC PermissionDenied), or no acceptable certificate (gRPC
     Unauthenticated, a failed TLS handshake)`

// cliError is an error with an exit code and an optional hint printed after
// the message.
type cliError struct {
	code int
	err  error
	hint string
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

// usageErrorf reports bad input caught locally (exit 2).
func usageErrorf(format string, args ...any) error {
	return &cliError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// codedErrorf returns an error with the given exit code.
func codedErrorf(code int, format string, args ...any) error {
	return &cliError{code: code, err: fmt.Errorf(format, args...)}
}

// withHint attaches a hint to err (keeping its exit code).
func withHint(err error, hint string) error {
	var ce *cliError
	if errors.As(err, &ce) {
		c := *ce
		if c.hint != "" {
			c.hint += "\n"
		}
		c.hint += hint
		return &c
	}
	return &cliError{code: exitCode(err), err: err, hint: hint}
}

// ExitCodeForGRPC maps a gRPC status code to a drummercmd exit code. Every
// RPC failure goes through here.
func ExitCodeForGRPC(c codes.Code) int {
	switch c {
	case codes.OK:
		return ExitOK
	case codes.InvalidArgument, codes.OutOfRange:
		return ExitUsage
	case codes.Unavailable, codes.DeadlineExceeded:
		return ExitUnavailable
	case codes.NotFound:
		return ExitNotFound
	case codes.AlreadyExists, codes.FailedPrecondition, codes.Aborted:
		return ExitConflict
	case codes.PermissionDenied, codes.Unauthenticated:
		return ExitPermission
	default:
		return ExitFailure
	}
}

// exitCode returns the exit code for an error returned by a command.
func exitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ce *cliError
	if errors.As(err, &ce) {
		return ce.code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ExitUnavailable
	}
	if s, ok := grpcStatus(err); ok {
		if tlsFailure(s.Message()) {
			return ExitPermission
		}
		return ExitCodeForGRPC(s.Code())
	}
	return ExitFailure
}

// tlsFailure recognizes a failed TLS handshake in an error message (gRPC
// reports it as Unavailable): a certificate refused by the server, or a
// server certificate this client does not trust.
func tlsFailure(msg string) bool {
	for _, m := range []string{"authentication handshake failed", "remote error: tls:", "x509:", "tls: "} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// grpcStatus finds a gRPC status in err's chain (without rewriting its
// message the way status.FromError does for wrapped errors).
func grpcStatus(err error) (*status.Status, bool) {
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		if s := gs.GRPCStatus(); s != nil {
			return s, true
		}
	}
	return nil, false
}

// rpcError turns the error of an RPC into a cliError: exit code from the
// gRPC status, message "<what>: <server message> (<Code>)", and a hint for
// the codes an operator can act on. endpoints and timeout are named in the
// hint for unavailability.
func (a *app) rpcError(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	s, ok := grpcStatus(err)
	if !ok {
		code := exitCode(err)
		return &cliError{code: code, err: fmt.Errorf("%s: %w", what, err), hint: a.hintFor(code, codes.Unknown)}
	}
	msg := s.Message()
	if msg == "" {
		msg = strings.ToLower(s.Code().String())
	}
	code := ExitCodeForGRPC(s.Code())
	if tlsFailure(msg) {
		code = ExitPermission
	}
	return &cliError{
		code: code,
		err:  fmt.Errorf("%s: %s (%s)", what, msg, s.Code()),
		hint: a.hintFor(code, s.Code()),
	}
}

func (a *app) hintFor(exit int, c codes.Code) string {
	switch {
	case exit == ExitUnavailable:
		return fmt.Sprintf("no drummer scheduler leader answered within --command-timeout=%s; check that the drummer servers at %s are running and have elected a leader (set --endpoints or DRUMMER_ENDPOINTS), or raise --command-timeout",
			a.commandTimeout, strings.Join(a.endpointList(), ","))
	case c == codes.Unimplemented:
		return "the drummer server does not implement this call; is it an older version than drummercmd?"
	case c == codes.PermissionDenied:
		return "your certificate's role may not do this; use a certificate with a role the message names (drummer cert create-client --role ...; see docs/security.md)"
	case exit == ExitPermission:
		return "no acceptable certificate: check --ca-file, --cert-file and --key-file (or DRUMMER_CA_FILE, DRUMMER_CERT_FILE, DRUMMER_KEY_FILE): the certificate must be signed by the deployment's CA, and the CA file must hold the CA that signed the servers"
	}
	return ""
}
