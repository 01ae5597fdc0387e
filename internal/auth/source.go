package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"
)

// HowToMakeCertificates is the hint printed when a program has no
// certificates.
const HowToMakeCertificates = `make certificates with
  drummer cert create-ca --certs-dir certs
  drummer cert create-server --certs-dir certs --name drummer1 --hosts 127.0.0.1,localhost
  drummer cert create-nodehost --certs-dir certs --name nodehost1 --raft-address 127.0.0.1:7201
  drummer cert create-client --certs-dir certs --name alice --role admin
and pass --ca-file certs/ca.crt --cert-file certs/NAME.crt --key-file certs/NAME.key,
or pass --insecure to run without TLS and without authentication (trusted networks only);
see docs/security.md`

// DefaultCheckEvery is how often the certificate files are checked for
// changes.
const DefaultCheckEvery = 5 * time.Second

// Files names the PEM files of a process's identity and trust.
type Files struct {
	// CAFile holds the CA certificates to trust (ca.crt: all three CAs).
	CAFile string
	// CertFile and KeyFile are this process's certificate and key.
	CertFile, KeyFile string
}

// IsZero reports whether no file is given.
func (f Files) IsZero() bool { return f.CAFile == "" && f.CertFile == "" && f.KeyFile == "" }

// Validate checks that all three files or none are given.
func (f Files) Validate() error {
	if f.IsZero() {
		return nil
	}
	var missing []string
	if f.CAFile == "" {
		missing = append(missing, "--ca-file")
	}
	if f.CertFile == "" {
		missing = append(missing, "--cert-file")
	}
	if f.KeyFile == "" {
		missing = append(missing, "--key-file")
	}
	if len(missing) > 0 {
		return fmt.Errorf("mutual TLS needs --ca-file, --cert-file and --key-file together; missing %v", missing)
	}
	return nil
}

// CheckMode validates the choice between mutual TLS and --insecure: one
// of them, not both, not neither.
func CheckMode(f Files, insecure bool) error {
	if err := f.Validate(); err != nil {
		return err
	}
	switch {
	case insecure && !f.IsZero():
		return errors.New("--insecure and --ca-file/--cert-file/--key-file are exclusive: choose plaintext or mutual TLS")
	case !insecure && f.IsZero():
		return errors.New("no certificates given; " + HowToMakeCertificates)
	}
	return nil
}

// SourceOptions configure a Source.
type SourceOptions struct {
	Files
	// Roles the process's own certificate may have (empty: any).
	Roles []Role
	// RaftAddress, for a nodehost, is the raft address its certificate
	// must be bound to.
	RaftAddress string
	// RaftCAFile, when set, receives on every load the CA certificates
	// that sign this process's Raft peers (the CAs of its own
	// certificate's kind), for dragonboat's NodeHostConfig.CAFile.
	RaftCAFile string
	// CheckEvery is how often the files are checked for changes (default
	// DefaultCheckEvery).
	CheckEvery time.Duration
	Logger     *slog.Logger
	// Now is the clock used to validate certificates (default time.Now).
	Now func() time.Time
}

type fileStamp struct {
	size  int64
	mtime int64
	ino   uint64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = s.Ino
	}
	return st, nil
}

// material is one loaded, consistent set of CA certificates, certificate
// and key. It is never modified once published.
type material struct {
	cert   *tls.Certificate
	leaf   *x509.Certificate
	id     Identity
	pool   *x509.CertPool
	cas    []*x509.Certificate
	stamps [3]fileStamp
}

// Source holds a process's certificate, key and trusted CAs, and reloads
// them when their files change (checked at most every CheckEvery, on use
// and by Run): certificates rotate without a restart. A file set that
// fails to load (half-written, mismatched key) leaves the previous one in
// force until the files are fixed.
type Source struct {
	opts      SourceOptions
	log       *slog.Logger
	cur       atomic.Pointer[material]
	lastCheck atomic.Int64
	checking  atomic.Bool

	mu      sync.Mutex // serializes loads
	lastErr string
}

// NewSource loads the files and fails with an explanation if they are
// unusable.
func NewSource(opts SourceOptions) (*Source, error) {
	if err := opts.Files.Validate(); err != nil {
		return nil, err
	}
	if opts.Files.IsZero() {
		return nil, errors.New("no certificate files given")
	}
	if opts.CheckEvery <= 0 {
		opts.CheckEvery = DefaultCheckEvery
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Source{opts: opts, log: opts.Logger.With("component", "tls")}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	if err := s.publish(m); err != nil {
		return nil, err
	}
	s.lastCheck.Store(time.Now().UnixNano())
	if left := m.leaf.NotAfter.Sub(opts.Now()); left < 30*24*time.Hour {
		s.log.Warn("certificate expires soon; rotate it (docs/security.md)", "cert_file", opts.CertFile, "not_after", m.leaf.NotAfter)
	}
	return s, nil
}

// Files returns the files the source reads.
func (s *Source) Files() Files { return s.opts.Files }

// Identity is this process's own identity (from its certificate).
func (s *Source) Identity() Identity { return s.material().id }

// Leaf is this process's current certificate.
func (s *Source) Leaf() *x509.Certificate { return s.material().leaf }

// material returns the current set, checking the files first when due.
func (s *Source) material() *material {
	if time.Since(time.Unix(0, s.lastCheck.Load())) >= s.opts.CheckEvery && s.checking.CompareAndSwap(false, true) {
		s.check()
		s.checking.Store(false)
	}
	return s.cur.Load()
}

// Run checks the files every CheckEvery until ctx ends, so a rotation is
// picked up (and the Raft CA file rewritten) even when no connection is
// made.
func (s *Source) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.checking.CompareAndSwap(false, true) {
				s.check()
				s.checking.Store(false)
			}
		}
	}
}

// Reload checks the files now and loads them if they changed.
func (s *Source) Reload() error { return s.check() }

func (s *Source) stamps() ([3]fileStamp, error) {
	var out [3]fileStamp
	for i, p := range []string{s.opts.CAFile, s.opts.CertFile, s.opts.KeyFile} {
		st, err := stampOf(p)
		if err != nil {
			return out, err
		}
		out[i] = st
	}
	return out, nil
}

func (s *Source) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastCheck.Store(time.Now().UnixNano())
	st, err := s.stamps()
	if err == nil && st == s.cur.Load().stamps {
		return nil
	}
	m, err := s.load()
	if err == nil {
		err = s.publish(m)
	}
	if err != nil {
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			s.log.Error("cannot reload the certificates; keeping the previous ones", "err", err)
		}
		return err
	}
	s.lastErr = ""
	s.log.Info("certificates reloaded", "cert_file", s.opts.CertFile, "serial", m.id.Serial, "not_after", m.leaf.NotAfter)
	return nil
}

// publish writes the Raft CA file (if any) and makes m current.
func (s *Source) publish(m *material) error {
	if s.opts.RaftCAFile != "" {
		if err := writeIfChanged(s.opts.RaftCAFile, peerCAPEM(m.cas, m.id.Role.CAKind()), 0o644); err != nil {
			return fmt.Errorf("write the Raft CA file %s: %w", s.opts.RaftCAFile, err)
		}
	}
	s.cur.Store(m)
	return nil
}

// load reads and checks the three files.
func (s *Source) load() (*material, error) {
	o := s.opts
	st, err := s.stamps()
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	cas, err := ParseCAs(caPEM)
	if err != nil {
		return nil, fmt.Errorf("--ca-file %s: %w", o.CAFile, err)
	}
	certPEM, err := os.ReadFile(o.CertFile)
	if err != nil {
		return nil, fmt.Errorf("--cert-file: %w", err)
	}
	keyPEM, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--cert-file %s with --key-file %s: %w", o.CertFile, o.KeyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("--cert-file %s: %w", o.CertFile, err)
		}
		cert.Leaf = leaf
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, raw := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(raw); err == nil {
			inter.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: o.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("--cert-file %s is not usable with --ca-file %s: %w", o.CertFile, o.CAFile, err)
	}
	id, err := identityOfChains(chains)
	if err != nil {
		return nil, fmt.Errorf("--cert-file %s: %w", o.CertFile, err)
	}
	if len(o.Roles) > 0 && !slices.Contains(o.Roles, id.Role) {
		return nil, fmt.Errorf("--cert-file %s has role %s; this program needs a certificate with role %v (see drummer cert --help)", o.CertFile, id.Role, o.Roles)
	}
	if o.RaftAddress != "" && id.Role == RoleNodehost && !id.BoundTo(o.RaftAddress) {
		return nil, fmt.Errorf("--cert-file %s is bound to raft address %v, not --raft-address %s; make a certificate for this nodehost with `drummer cert create-nodehost --raft-address %s`",
			o.CertFile, id.RaftAddresses, o.RaftAddress, o.RaftAddress)
	}
	return &material{cert: &cert, leaf: leaf, id: id, pool: pool, cas: cas, stamps: st}, nil
}

// ParseCAs parses a PEM bundle of CA certificates.
func ParseCAs(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for len(b) > 0 {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %q is not a CA certificate", c.Subject.CommonName)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no CA certificate found (want PEM \"CERTIFICATE\" blocks, e.g. the ca.crt made by `drummer cert create-ca`)")
	}
	return out, nil
}

// peerCAPEM returns the CAs that sign Raft peers of the given kind: those
// marked with that kind, or every CA when none is marked (a PKI of your
// own; then every certificate it signed can reach the Raft ports).
func peerCAPEM(cas []*x509.Certificate, kind CAKind) []byte {
	var b bytes.Buffer
	for _, c := range cas {
		if CAKindOf(c) == kind {
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	}
	if b.Len() == 0 {
		for _, c := range cas {
			if CAKindOf(c) == CAKindNone {
				_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
			}
		}
	}
	return b.Bytes()
}

// writeIfChanged atomically replaces path with b unless it holds b.
func writeIfChanged(path string, b []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return WriteFileAtomic(path, b, mode)
}

// WriteFileAtomic writes b to a temporary file next to path and renames
// it over path, so readers see the old or the new content, never a part.
func WriteFileAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// ---------------------------------------------------------------------------
// TLS configurations.

// ServerTLS returns a server configuration: TLS 1.3, this process's
// current certificate, client certificates verified against the current
// CAs with clientAuth (tls.RequireAndVerifyClientCert for gRPC;
// tls.VerifyClientCertIfGiven where web tokens are accepted instead), and
// the role of a presented certificate checked against its CA.
func (s *Source) ServerTLS(clientAuth tls.ClientAuthType, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.material()
			return &tls.Config{
				MinVersion:             tls.VersionTLS13,
				Certificates:           []tls.Certificate{*m.cert},
				ClientCAs:              m.pool,
				ClientAuth:             clientAuth,
				NextProtos:             nextProtos,
				SessionTicketsDisabled: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return nil // allowed by clientAuth; the request then needs a token
					}
					_, err := identityOfChains(cs.VerifiedChains)
					return err
				},
			}, nil
		},
	}
}

// ServerCredentials are gRPC server credentials: mutual TLS with
// verified client certificates.
func (s *Source) ServerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(s.ServerTLS(tls.RequireAndVerifyClientCert, "h2"))
}

// ClientTLS returns a client configuration for one connection to
// serverName (a host name or IP address): TLS 1.3, this process's current
// certificate, the server verified against the current CAs, and its role
// checked to be one of expect (any role when empty).
func (s *Source) ClientTLS(serverName string, expect ...Role) *tls.Config {
	m := s.material()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ServerName:   serverName,
		Certificates: []tls.Certificate{*m.cert},
		RootCAs:      m.pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := identityOfChains(cs.VerifiedChains)
			if err != nil {
				return err
			}
			if len(expect) > 0 && !slices.Contains(expect, id.Role) {
				return fmt.Errorf("%s presents certificate %q with role %s; expected role %v", serverName, id.Name, id.Role, expect)
			}
			return nil
		},
	}
}

// ClientCredentials are gRPC client credentials for servers of the
// expected roles; each connection uses the certificates current when it
// is made.
func (s *Source) ClientCredentials(expect ...Role) credentials.TransportCredentials {
	return &clientCreds{src: s, expect: expect}
}

type clientCreds struct {
	src    *Source
	expect []Role
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
	}
	cfg := c.src.ClientTLS(host, c.expect...)
	cfg.NextProtos = []string{"h2"}
	tc, info, err := credentials.NewTLS(cfg).ClientHandshake(ctx, authority, conn)
	if err != nil {
		return nil, nil, err
	}
	// In TLS 1.3 the server judges our certificate after our handshake
	// is done, so a refusal would only show later as a broken pipe. A
	// gRPC server speaks first (its SETTINGS frame): wait for that first
	// byte, so that a refusal is reported as what it is (the server's
	// TLS alert) and keep the byte for the HTTP/2 transport.
	probe := probeTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < probe {
		probe = time.Until(dl)
	}
	_ = tc.SetReadDeadline(time.Now().Add(probe))
	var first [1]byte
	n, rerr := tc.Read(first[:])
	_ = tc.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case rerr != nil && !(errors.As(rerr, &ne) && ne.Timeout()):
		tc.Close()
		return nil, nil, fmt.Errorf("the server refused the connection: %w", rerr)
	case n == 0:
		return tc, info, nil
	}
	return &prefixConn{Conn: tc, prefix: first[:n]}, info, nil
}

// probeTimeout bounds the wait for a server's first byte.
const probeTimeout = 2 * time.Second

// prefixConn returns prefix before reading from Conn.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("auth: client credentials used on a server")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	return &clientCreds{src: c.src, expect: slices.Clone(c.expect)}
}

//lint:ignore U1000 required by the interface (deprecated there)
func (c *clientCreds) OverrideServerName(string) error { return nil }

// PeerIdentity returns the identity of the other side of a TLS
// connection whose chain was verified (a gRPC peer's AuthInfo).
func PeerIdentity(info credentials.AuthInfo) (Identity, error) {
	ti, ok := info.(credentials.TLSInfo)
	if !ok {
		return Identity{}, errors.New("not a TLS connection")
	}
	return identityOfChains(ti.State.VerifiedChains)
}
