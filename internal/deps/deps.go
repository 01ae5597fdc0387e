// Package deps pins modules that the tree is about to use, so that
// `go mod tidy` keeps them while the packages importing them are written.
// Remove an import once real code uses the module.
package deps

import (
	_ "github.com/anishathalye/porcupine"
)
