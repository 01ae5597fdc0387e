// Package pki makes the certificates of a Drummer deployment (`drummer
// cert ...`): three CAs and the certificates they sign, with the role (and
// a nodehost's raft address) in the certificate, and web tokens. Pure Go
// (crypto/x509), ECDSA P-256.
//
// Layout of a certs directory:
//
//	ca.crt           the three CA certificates (client, server, nodehost): the --ca-file of every program
//	ca.key           the client CA's key: signs admin/operator/viewer/app certificates and web tokens
//	ca-server.key    the server CA's key: signs drummer server certificates
//	ca-nodehost.key  the nodehost CA's key: signs nodehost certificates
//	NAME.crt         a certificate (followed by nothing else: the CAs are in ca.crt)
//	NAME.key         its key
//
// Keys are written with mode 0600, certificates 0644; files are replaced
// atomically, and never without Overwrite.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/drummerhq/drummer/internal/auth"
)

// File names in a certs directory.
const (
	CACertFile      = "ca.crt"
	ClientCAKeyFile = "ca.key"
	ServerCAKeyFile = "ca-server.key"
	NodeCAKeyFile   = "ca-nodehost.key"
)

// Default lifetimes.
const (
	DefaultCALifetime   = 10 * 365 * 24 * time.Hour
	DefaultCertLifetime = 2 * 365 * 24 * time.Hour
)

var caKinds = []auth.CAKind{auth.CAKindClient, auth.CAKindServer, auth.CAKindNodehost}

func caKeyFile(k auth.CAKind) string {
	switch k {
	case auth.CAKindServer:
		return ServerCAKeyFile
	case auth.CAKindNodehost:
		return NodeCAKeyFile
	}
	return ClientCAKeyFile
}

// reserved names cannot be used for certificates: they are the CA files.
func reservedName(name string) bool {
	return name == "ca" || strings.HasPrefix(name, "ca-")
}

func checkWritable(overwrite bool, paths ...string) error {
	if overwrite {
		return nil
	}
	var exist []string
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			exist = append(exist, p)
		}
	}
	if len(exist) > 0 {
		return fmt.Errorf("%s already exists; pass --overwrite to replace it (e.g. to rotate a certificate)", strings.Join(exist, ", "))
	}
	return nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// CreateCA makes the three CAs in dir and returns the files written.
func CreateCA(dir string, lifetime time.Duration, overwrite bool, now time.Time) ([]string, error) {
	if lifetime <= 0 {
		lifetime = DefaultCALifetime
	}
	if lifetime < 24*time.Hour {
		return nil, fmt.Errorf("--lifetime %s: a CA should live at least 24h", lifetime)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create --certs-dir: %w", err)
	}
	paths := []string{filepath.Join(dir, CACertFile)}
	for _, k := range caKinds {
		paths = append(paths, filepath.Join(dir, caKeyFile(k)))
	}
	if err := checkWritable(overwrite, paths...); err != nil {
		return nil, err
	}
	var bundle bytes.Buffer
	keys := map[auth.CAKind][]byte{}
	for _, k := range caKinds {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		sn, err := serial()
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          sn,
			Subject:               pkix.Name{Organization: []string{"Drummer"}, CommonName: fmt.Sprintf("Drummer %s CA", k)},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(lifetime),
			IsCA:                  true,
			BasicConstraintsValid: true,
			MaxPathLenZero:        true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			URIs:                  []*url.URL{auth.CAKindURI(k)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return nil, err
		}
		bundle.Write(certPEM(der))
		if keys[k], err = keyPEM(key); err != nil {
			return nil, err
		}
	}
	// Keys first: a reader of ca.crt then never finds a CA without its key.
	for _, k := range caKinds {
		if err := auth.WriteFileAtomic(filepath.Join(dir, caKeyFile(k)), keys[k], 0o600); err != nil {
			return nil, err
		}
	}
	if err := auth.WriteFileAtomic(filepath.Join(dir, CACertFile), bundle.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return paths, nil
}

// CA is one loaded CA.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// LoadCA loads the CA of a kind from dir.
func LoadCA(dir string, kind auth.CAKind) (*CA, error) {
	caPath := filepath.Join(dir, CACertFile)
	b, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("%w (run `drummer cert create-ca --certs-dir %s` first)", err, dir)
	}
	cas, err := auth.ParseCAs(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caPath, err)
	}
	var cert *x509.Certificate
	for _, c := range cas {
		if auth.CAKindOf(c) == kind {
			cert = c
		}
	}
	if cert == nil {
		return nil, fmt.Errorf("%s holds no %s CA (was it made by `drummer cert create-ca`?)", caPath, kind)
	}
	keyPath := filepath.Join(dir, caKeyFile(kind))
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("the %s CA's key: %w (it is needed to sign; keep it where certificates are made)", kind, err)
	}
	blk, _ := pem.Decode(kb)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM key", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		if ek, err2 := x509.ParseECPrivateKey(blk.Bytes); err2 == nil {
			k = ek
		} else {
			return nil, fmt.Errorf("%s: %w", keyPath, err)
		}
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ECDSA key", keyPath)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match the %s CA certificate in %s", keyPath, kind, caPath)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Request describes a certificate to make.
type Request struct {
	Dir  string
	Name string
	Role auth.Role
	// Hosts are the DNS names and IP addresses servers are reached at
	// (server and nodehost certificates).
	Hosts []string
	// RaftAddress binds a nodehost certificate (required for nodehosts).
	RaftAddress string
	// Lifetime defaults to DefaultCertLifetime; it is cut to the CA's.
	Lifetime  time.Duration
	Overwrite bool
	Now       time.Time
}

// ParseHosts splits a comma list of host names and IP addresses.
func ParseHosts(s string) ([]string, error) {
	var out []string
	for _, h := range strings.Split(s, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if net.ParseIP(h) == nil {
			for _, r := range h {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '*') {
					return nil, fmt.Errorf("--hosts: %q is neither an IP address nor a DNS name", h)
				}
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// Create makes a certificate and its key in req.Dir and returns the
// files written.
func Create(req Request) ([]string, error) {
	if err := auth.ValidName(req.Name); err != nil {
		return nil, fmt.Errorf("--name: %w", err)
	}
	if reservedName(req.Name) {
		return nil, fmt.Errorf("--name %q is reserved for the CA files; choose another", req.Name)
	}
	if req.Now.IsZero() {
		req.Now = time.Now()
	}
	if req.Lifetime <= 0 {
		req.Lifetime = DefaultCertLifetime
	}
	if req.Lifetime < time.Hour {
		return nil, fmt.Errorf("--lifetime %s: at least 1h", req.Lifetime)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Drummer"}, CommonName: req.Name},
		NotBefore:             req.Now.Add(-time.Hour),
		NotAfter:              req.Now.Add(req.Lifetime),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		URIs:                  []*url.URL{auth.RoleURI(req.Role)},
	}
	switch req.Role {
	case auth.RoleServer, auth.RoleNodehost:
		// Raft transports use one certificate for both directions.
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		hosts := req.Hosts
		if req.Role == auth.RoleNodehost {
			if req.RaftAddress == "" {
				return nil, errors.New("--raft-address is required: a nodehost certificate is bound to its raft address (host:port)")
			}
			host, port, err := net.SplitHostPort(req.RaftAddress)
			if err != nil || host == "" || port == "" {
				return nil, fmt.Errorf("--raft-address %q: want host:port, e.g. 127.0.0.1:7201", req.RaftAddress)
			}
			tmpl.URIs = append(tmpl.URIs, auth.RaftURI(req.RaftAddress))
			if len(hosts) == 0 {
				hosts = []string{host}
			} else if !containsFold(hosts, host) {
				hosts = append(hosts, host)
			}
		} else if len(hosts) == 0 {
			return nil, errors.New("--hosts is required: the addresses clients and peers dial this server at, e.g. 127.0.0.1,localhost")
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	case auth.RoleAdmin, auth.RoleOperator, auth.RoleViewer, auth.RoleApp:
		if len(req.Hosts) > 0 || req.RaftAddress != "" {
			return nil, errors.New("client certificates take no --hosts or --raft-address")
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, fmt.Errorf("cannot make a certificate with role %s", req.Role)
	}
	certPath, keyPath := filepath.Join(req.Dir, req.Name+".crt"), filepath.Join(req.Dir, req.Name+".key")
	if err := checkWritable(req.Overwrite, certPath, keyPath); err != nil {
		return nil, err
	}
	ca, err := LoadCA(req.Dir, req.Role.CAKind())
	if err != nil {
		return nil, err
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	if !req.Now.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the %s CA expired on %s; make a new CA (docs/security.md, rotating the CAs)", req.Role.CAKind(), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	// Key first, then certificate: a reloader that sees the new
	// certificate finds its key (one seeing only the new key fails the
	// pair check and keeps the old pair until the next check).
	if err := auth.WriteFileAtomic(keyPath, kp, 0o600); err != nil {
		return nil, err
	}
	if err := auth.WriteFileAtomic(certPath, certPEM(der), 0o644); err != nil {
		return nil, err
	}
	return []string{certPath, keyPath}, nil
}

func containsFold(list []string, s string) bool {
	for _, e := range list {
		if strings.EqualFold(e, s) {
			return true
		}
	}
	return false
}

// CreateToken signs a web token with the client CA of dir.
func CreateToken(dir string, role auth.Role, name string, ttl time.Duration, now time.Time) (string, error) {
	ca, err := LoadCA(dir, auth.CAKindClient)
	if err != nil {
		return "", err
	}
	exp := now.Add(ttl)
	if exp.After(ca.Cert.NotAfter) {
		exp = ca.Cert.NotAfter
	}
	return auth.SignToken(ca.Key, auth.TokenClaims{Role: role, Name: name, IssuedAt: now, Expires: exp})
}
