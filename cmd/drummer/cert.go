package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/internal/auth"
	"github.com/drummerhq/drummer/internal/pki"
)

const certLong = `drummer cert makes the certificates of a deployment (pure Go, ECDSA P-256).

  drummer cert create-ca --certs-dir certs
  drummer cert create-server --certs-dir certs --name drummer1 --hosts 127.0.0.1,localhost
  drummer cert create-nodehost --certs-dir certs --name nodehost1 --raft-address 127.0.0.1:7201
  drummer cert create-client --certs-dir certs --name alice --role operator
  drummer cert create-token --certs-dir certs --name dashboard --role viewer --ttl 24h

create-ca makes three CAs: ca.crt holds their certificates (give it to every
program as --ca-file); ca.key signs client certificates and web tokens,
ca-server.key drummer servers, ca-nodehost.key nodehosts. Each certificate
NAME.crt / NAME.key carries its role; a nodehost certificate is bound to its
raft address. Keys are written with mode 0600. Existing files are never
replaced without --overwrite (that is how a certificate is rotated: the
programs pick up the new files without a restart).

Roles: admin (everything), operator (shards, regions, launch, hosts,
repairs), viewer (read-only), app (locate shards, the NodehostAPI),
nodehost, server. See docs/security.md.`

func certCmd(stdout, _ io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "cert",
		Short: "Make CAs, certificates and web tokens for mutual TLS",
		Long:  certLong,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var (
		dir, name, hosts, raft, role string
		lifetime, caLifetime, ttl    time.Duration
		overwrite                    bool
	)
	common := func(cmd *cobra.Command, withName bool) {
		cmd.Flags().StringVar(&dir, "certs-dir", "", "directory of the CA and certificates (required)")
		if withName {
			cmd.Flags().StringVar(&name, "name", "", "certificate name: the files NAME.crt and NAME.key (required)")
		}
		cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace existing files (rotation)")
		cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	}
	need := func(withName bool) error {
		if dir == "" {
			return usageError{errors.New("--certs-dir is required")}
		}
		if withName && name == "" {
			return usageError{errors.New("--name is required")}
		}
		return nil
	}
	wrote := func(paths []string, err error) error {
		if err != nil {
			return err
		}
		for _, p := range paths {
			fmt.Fprintln(stdout, "wrote", p)
		}
		return nil
	}
	leaf := func(r auth.Role) error {
		hs, err := pki.ParseHosts(hosts)
		if err != nil {
			return usageError{err}
		}
		return wrote(pki.Create(pki.Request{Dir: dir, Name: name, Role: r, Hosts: hs, RaftAddress: raft, Lifetime: lifetime, Overwrite: overwrite}))
	}

	ca := &cobra.Command{
		Use: "create-ca", Short: "Make the deployment's three CAs", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := need(false); err != nil {
				return err
			}
			return wrote(pki.CreateCA(dir, caLifetime, overwrite, time.Now()))
		},
	}
	common(ca, false)
	// Each command has its own variable: pflag writes a flag's default
	// into its variable when the flag is defined.
	ca.Flags().DurationVar(&caLifetime, "lifetime", pki.DefaultCALifetime, "validity of the CAs")

	server := &cobra.Command{
		Use: "create-server", Short: "Make a drummer server's certificate", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := need(true); err != nil {
				return err
			}
			if strings.TrimSpace(hosts) == "" {
				return usageError{errors.New("--hosts is required: the addresses clients, nodehosts and the other servers dial this server at, e.g. 127.0.0.1,localhost")}
			}
			return leaf(auth.RoleServer)
		},
	}
	common(server, true)
	server.Flags().StringVar(&hosts, "hosts", "", "DNS names and IP addresses of the server, comma separated (required)")
	server.Flags().DurationVar(&lifetime, "lifetime", pki.DefaultCertLifetime, "validity (cut to the CA's)")

	nodehost := &cobra.Command{
		Use: "create-nodehost", Short: "Make a nodehost's certificate, bound to its raft address", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := need(true); err != nil {
				return err
			}
			if raft == "" {
				return usageError{errors.New("--raft-address is required: a nodehost certificate is bound to the raft address the nodehost runs with")}
			}
			return leaf(auth.RoleNodehost)
		},
	}
	common(nodehost, true)
	nodehost.Flags().StringVar(&raft, "raft-address", "", "the nodehost's --raft-address, host:port (required)")
	nodehost.Flags().StringVar(&hosts, "hosts", "", "DNS names and IP addresses of the nodehost (default: the raft address's host; add the API address's host if it differs)")
	nodehost.Flags().DurationVar(&lifetime, "lifetime", pki.DefaultCertLifetime, "validity (cut to the CA's)")

	clientCmd := &cobra.Command{
		Use: "create-client", Short: "Make a certificate for a person or an application", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := need(true); err != nil {
				return err
			}
			r, err := auth.ParseRole(role)
			if err != nil || !r.IsClient() {
				return usageError{fmt.Errorf("--role %q: want admin, operator, viewer or app", role)}
			}
			return leaf(r)
		},
	}
	common(clientCmd, true)
	clientCmd.Flags().StringVar(&role, "role", "", "admin, operator, viewer or app (required)")
	clientCmd.Flags().DurationVar(&lifetime, "lifetime", pki.DefaultCertLifetime, "validity (cut to the CA's)")

	token := &cobra.Command{
		Use: "create-token", Short: "Sign a web token for a browser (dashboard, metrics)", Args: cobra.NoArgs,
		Long: `create-token prints a token signed by the client CA. A browser opens
https://HOST:PORT/...?token=TOKEN once (the server sets a cookie and drops the
token from the address), or a script sends "Authorization: Bearer TOKEN".
Tokens cannot be revoked one by one: keep --ttl short.`,
		RunE: func(*cobra.Command, []string) error {
			if err := need(true); err != nil {
				return err
			}
			r, err := auth.ParseRole(role)
			if err != nil || !auth.TokenRoleAllowed(r) {
				return usageError{fmt.Errorf("--role %q: want viewer, operator or admin", role)}
			}
			if ttl <= 0 || ttl > auth.MaxTokenTTL {
				return usageError{fmt.Errorf("--ttl %s: want more than 0 and at most %s", ttl, auth.MaxTokenTTL)}
			}
			tok, err := pki.CreateToken(dir, r, name, ttl, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, tok)
			return nil
		},
	}
	token.Flags().StringVar(&dir, "certs-dir", "", "directory of the CA (required)")
	token.Flags().StringVar(&name, "name", "", "who the token is for (required)")
	token.Flags().StringVar(&role, "role", "viewer", "viewer, operator or admin")
	token.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "lifetime of the token")
	token.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	list := &cobra.Command{
		Use: "list", Short: "List the certificates of a certs directory", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := need(false); err != nil {
				return err
			}
			return listCerts(stdout, dir)
		},
	}
	list.Flags().StringVar(&dir, "certs-dir", "", "directory of the CA and certificates (required)")
	list.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	c.AddCommand(ca, server, nodehost, clientCmd, token, list)
	return c
}

func listCerts(w io.Writer, dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.crt"))
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("no certificates in %s", dir)
	}
	slices.Sort(paths)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tNAME\tROLE\tBOUND TO\tHOSTS\tNOT AFTER")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			role, bound := "", ""
			if c.IsCA {
				role = "CA (" + string(auth.CAKindOf(c)) + ")"
			} else if id, err := auth.IdentityOf(c); err == nil {
				role, bound = id.Role.String(), strings.Join(id.RaftAddresses, ",")
			} else {
				role = "?"
			}
			hosts := append([]string(nil), c.DNSNames...)
			for _, ip := range c.IPAddresses {
				hosts = append(hosts, ip.String())
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", filepath.Base(p), c.Subject.CommonName, role, bound, strings.Join(hosts, ","), c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return tw.Flush()
}
