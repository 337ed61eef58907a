#!/bin/sh
# Regenerates the Go code of every .proto under proto/. The generated files are
# committed, so building Mosaic needs neither protoc nor its plugins; run this
# after changing a .proto and commit the result.
#
# Needs protoc (3.21+), protoc-gen-go and protoc-gen-go-grpc on PATH:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@latest
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@latest
#
# Usage: proto/generate.sh [package-dir ...]   (default: all, e.g. adminpb)
set -eu

cd "$(dirname "$0")"
PATH="$PATH:$(go env GOPATH)/bin"

if [ "$#" -eq 0 ]; then
	set -- $(find . -name '*.proto' -exec dirname {} \; | sed 's|^\./||' | sort -u)
fi

for dir in "$@"; do
	dir=${dir%/}
	# Each package is compiled from its own folder, so descriptors are registered
	# under their bare file names ("admin.proto"), as raftcmdpb already is.
	(cd "$dir" && protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		./*.proto)
	echo "generated $dir"
done
