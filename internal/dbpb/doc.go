// Package dbpb holds the generated code for the Drummer DB's commands and
// records (proto/drummer/db/v1/db.proto). It is generated together with the
// public API by `go generate ./api/...`.
package dbpb
