// Package drummerpb holds the generated protobuf and gRPC code of Drummer's
// public API: the Drummer control-plane service (api/drummer/v1/drummer.proto)
// and the NodehostAPI data-plane service (api/drummer/v1/nodehost.proto),
// plus the NodehostAPI's error contract (reasons.go, hand-written).
//
// Regenerate with `go generate ./api/...`; the generators are pinned (buf in
// tools/go.mod, protoc-gen-go and protoc-gen-go-grpc as go tool dependencies
// of the main module; protoc-gen-grpc-gateway and protoc-gen-openapiv2 the
// same way, with the HTTP bindings of api/drummer/v1/drummer_http.yaml), so
// the output is reproduced byte for byte. The gateway (drummer.pb.gw.go)
// serves the service as JSON under /api/v1; api/openapi/drummer.swagger.json
// describes it.
package drummerpb

//go:generate sh -c "cd ../.. && go tool -modfile=tools/go.mod buf generate"
//go:generate sh -c "cd ../.. && go tool -modfile=tools/go.mod buf generate --template buf.gen.gateway.yaml --path api/drummer/v1/drummer.proto"
