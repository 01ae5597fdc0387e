package client

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/drummerhq/drummer/internal/auth"
)

// Security says how connections are secured: mutual TLS from PEM files
// (the deployment's ca.crt and a client certificate made by `drummer cert
// create-client`), or plaintext when Insecure. One of the two is
// required. Certificates are reloaded when their files change.
type Security struct {
	CAFile, CertFile, KeyFile string
	Insecure                  bool
}

func (s Security) source() (*auth.Source, error) {
	f := auth.Files{CAFile: s.CAFile, CertFile: s.CertFile, KeyFile: s.KeyFile}
	if err := auth.CheckMode(f, s.Insecure); err != nil {
		return nil, fmt.Errorf("client security (CAFile, CertFile and KeyFile, or Insecure): %w", err)
	}
	if s.Insecure {
		return nil, nil
	}
	return auth.NewSource(auth.SourceOptions{Files: f})
}

// credentials dials servers of the expected role with src, or plaintext.
func credentials(src *auth.Source, expect auth.Role) grpc.DialOption {
	if src == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(src.ClientCredentials(expect))
}
