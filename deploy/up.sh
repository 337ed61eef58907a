#!/usr/bin/env bash
# Builds the Mosaic server as a static binary, the FROM-scratch image of deploy/Dockerfile
# (mosaic:local), and starts the 3-member cluster of deploy/docker-compose.yml; waits until each
# member serves clients.
#
# Idempotent: run it again after a code change and it rebuilds, recreates the containers whose
# image changed and leaves the others running; the data volumes are kept. deploy/down.sh stops it.
#
# Clients: 127.0.0.1:2379 (m1), 127.0.0.1:22379 (m2), 127.0.0.1:32379 (m3); MOSAIC_M1_PORT,
# MOSAIC_M2_PORT and MOSAIC_M3_PORT choose other host ports, MOSAIC_COMPOSE_PROJECT another
# project name (containers, network and volumes are named after it).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mkdir -p "$context/rootfs/tmp" "$context/rootfs/data"
chmod 1777 "$context/rootfs/tmp"
chmod 0755 "$context/rootfs/data"
echo "building $context/mosaic (static)"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$context/mosaic" ./cmd/mosaic)

old_image="$(docker image inspect -f '{{.Id}}' "$MOSAIC_IMAGE" 2>/dev/null || true)"
docker build -q -t "$MOSAIC_IMAGE" -f "$deploy/Dockerfile" "$context"
compose up -d --remove-orphans
new_image="$(docker image inspect -f '{{.Id}}' "$MOSAIC_IMAGE")"
if [[ -n "$old_image" && "$old_image" != "$new_image" ]]; then
	# The previous build, now untagged and no longer used by the recreated containers.
	docker rmi "$old_image" >/dev/null 2>&1 || true
fi

# Wait until every member logged that it serves clients (or stopped).
for svc in m1 m2 m3; do
	for i in $(seq 1 60); do
		id="$(compose ps -q "$svc")"
		if [[ -n "$id" && "$(docker inspect -f '{{.State.Running}}' "$id")" != true ]]; then
			compose logs --no-color "$svc" >&2
			echo "$svc is not running" >&2
			exit 1
		fi
		if compose logs --no-color "$svc" 2>/dev/null | grep -q 'ready to serve client requests'; then
			break
		fi
		if [[ $i == 60 ]]; then
			compose logs --no-color "$svc" >&2
			echo "$svc did not become ready in 30s" >&2
			exit 1
		fi
		sleep 0.5
	done
done
compose ps
endpoints=""
for svc in m1 m2 m3; do
	endpoints+="${endpoints:+, }$(compose port "$svc" 2379) ($svc)"
done
echo "ready: clients at $endpoints; stop with deploy/down.sh"
