#!/usr/bin/env bash
# Generates a client's stubs from proto/ as it is, into a temporary folder, and runs the client
# against a running server. Debian packages only, nothing downloaded:
#   python: /usr/bin/python3 with python3-grpcio and python3-protobuf; protoc (protobuf-compiler),
#           grpc_python_plugin (protobuf-compiler-grpc), libprotobuf-dev (well-known types)
#   go:     golang, protoc-gen-go, protoc-gen-go-grpc, golang-google-grpc-dev,
#           golang-google-genproto-dev, golang-github-golang-protobuf-1-5-dev (GOPATH mode, offline)
# Usage: VOICEMODEL_ADDR=127.0.0.1:50051 VOICEMODEL_TOKEN=$(npm run -s token -- alice) clients/run.sh python|go
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lang=${1:-}
: "${VOICEMODEL_TOKEN:?set VOICEMODEL_TOKEN, e.g. VOICEMODEL_TOKEN=\$(npm run -s token -- alice)}"
export VOICEMODEL_ADDR=${VOICEMODEL_ADDR:-127.0.0.1:50051}
# Debian's protoc finds google/protobuf/*.proto here (libprotobuf-dev).
wkt=/usr/include
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root/proto"

case "$lang" in
  python)
    # Debian has no googleapis-common-protos: the client generates the standard google/rpc and
    # google/api files.
    protoc -I . -I "$wkt" --python_out="$work" --grpc_python_out="$work" \
      --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
      voicemodel/v1/*.proto google/rpc/status.proto google/rpc/error_details.proto \
      google/api/annotations.proto google/api/http.proto
    # Debian's own python3 sees python3-grpcio; a pyenv python3 earlier on PATH does not.
    PYTHONPATH="$work" /usr/bin/python3 "$root/clients/python/voicemodel_client.py"
    ;;
  go)
    # The google.rpc types come from genproto (what grpc-go's status package links), so only
    # our files are generated; go_package puts them under GOPATH.
    mkdir -p "$work/src/voicemodel-client"
    protoc -I . -I "$wkt" --go_out="$work/src" --go-grpc_out="$work/src" voicemodel/v1/*.proto
    cp "$root/clients/go/main.go" "$work/src/voicemodel-client/"
    GOPATH="$work:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS= \
      go build -o "$work/voicemodel-client" voicemodel-client
    "$work/voicemodel-client"
    ;;
  *)
    echo "usage: clients/run.sh python|go" >&2
    exit 2
    ;;
esac
