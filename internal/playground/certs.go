package playground

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/pki"
	"github.com/drummerhq/drummer/internal/tlsflags"
)

// The playground is secure by default: on first start it makes a CA and
// certificates in DataDir/certs (with the same code as `drummer cert`) —
// one per drummer server (drummer-N), one per nodehost bound to its raft
// address (nodehost-N), and one per client role (admin, operator, viewer,
// app) — and keeps them across runs.

const certsSubdir = "certs"

// clientRoles get a certificate each, named after the role.
var clientRoles = []auth.Role{auth.RoleAdmin, auth.RoleOperator, auth.RoleViewer, auth.RoleApp}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// ensureCerts makes the CA, the servers' and the clients' certificates
// that do not exist yet.
func (p *Playground) ensureCerts() error {
	if p.opts.Insecure {
		return nil
	}
	p.certs = filepath.Join(p.DataDir, certsSubdir)
	if !exists(filepath.Join(p.certs, pki.CACertFile)) {
		if _, err := pki.CreateCA(p.certs, 0, false, time.Now()); err != nil {
			return fmt.Errorf("make the dev CA: %w", err)
		}
	}
	for i := 1; i <= 3; i++ {
		if err := p.ensureCert(pki.Request{Name: fmt.Sprintf("drummer-%d", i), Role: auth.RoleServer, Hosts: []string{"127.0.0.1", "localhost"}}); err != nil {
			return err
		}
	}
	for _, r := range clientRoles {
		if err := p.ensureCert(pki.Request{Name: r.String(), Role: r}); err != nil {
			return err
		}
	}
	return nil
}

// ensureCert makes a certificate unless it exists (a nodehost's is made
// again if it is bound to another raft address: the port layout moved).
func (p *Playground) ensureCert(req pki.Request) error {
	req.Dir = p.certs
	f := p.files(req.Name)
	if exists(f.CertFile) && exists(f.KeyFile) {
		_, err := auth.NewSource(auth.SourceOptions{Files: f, RaftAddress: req.RaftAddress})
		if err == nil {
			return nil
		}
		req.Overwrite = true
	}
	if _, err := pki.Create(req); err != nil {
		return fmt.Errorf("make the dev certificate %s: %w", req.Name, err)
	}
	return nil
}

func (p *Playground) files(name string) auth.Files {
	return auth.Files{CAFile: filepath.Join(p.certs, pki.CACertFile),
		CertFile: filepath.Join(p.certs, name+".crt"), KeyFile: filepath.Join(p.certs, name+".key")}
}

// TLS returns the TLS flags of certificate NAME (Insecure in an insecure
// playground).
func (p *Playground) TLS(name string) tlsflags.Flags {
	if p.opts.Insecure {
		return tlsflags.Flags{Insecure: true}
	}
	return tlsflags.Flags{Files: p.files(name)}
}

// Security is the client configuration of certificate NAME.
func (p *Playground) Security(name string) client.Security {
	t := p.TLS(name)
	return client.Security{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, Insecure: t.Insecure}
}

func (p *Playground) tlsArgs(name string) []string {
	t := p.TLS(name)
	if t.Insecure {
		return []string{"--insecure"}
	}
	return []string{"--ca-file", t.CAFile, "--cert-file", t.CertFile, "--key-file", t.KeyFile}
}

// webToken signs a viewer token for a browser (empty when insecure).
func (p *Playground) webToken() (string, error) {
	if p.opts.Insecure {
		return "", nil
	}
	if p.certs == "" {
		return "", errors.New("no certificates")
	}
	return pki.CreateToken(p.certs, auth.RoleViewer, "dev-browser", 24*time.Hour, time.Now())
}
