// Package deps pins modules that the tree is about to use, so that
// `go mod tidy` keeps them while the packages importing them are written.
// Remove an import once real code uses the module.
package deps

import (
	_ "github.com/anishathalye/porcupine"
	_ "github.com/spf13/cobra"
	_ "go.uber.org/goleak"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/term"
	_ "google.golang.org/genproto/googleapis/rpc/errdetails"
)
