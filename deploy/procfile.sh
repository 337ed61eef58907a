#!/usr/bin/env bash
# Runs the Procfile at the repository root, a 3-member cluster on this machine, with goreman:
# builds bin/mosaic and bin/goreman (the version pinned in deploy/goreman/go.mod), then runs
# `goreman start`. Ctrl-C stops all three members. Other goreman commands pass through:
#   deploy/procfile.sh run stop infra2     (from another terminal; also: run start, run list)
# The members keep their data in deploy/data/; rm -rf deploy/data to start afresh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
go build -o bin/mosaic ./cmd/mosaic
# deploy/goreman is a module of its own, outside the go.work workspace.
GOWORK=off go -C deploy/goreman build -o "$root/bin/goreman" github.com/mattn/goreman
# goreman's control server listens on 0.0.0.0:8555 unless told otherwise.
export GOREMAN_RPC_ADDR="${GOREMAN_RPC_ADDR:-127.0.0.1}"
if [[ $# == 0 ]]; then
	set -- start
fi
exec bin/goreman -f Procfile "$@"
