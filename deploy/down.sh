#!/usr/bin/env bash
# Stops the cluster deploy/up.sh started: removes its containers and network and keeps the data
# volumes, so the next deploy/up.sh finds the data again.
#
#   deploy/down.sh --purge   also removes the data volumes, the mosaic:local image and the build
#                            context deploy/build/: nothing of it is left.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

case "${1:-}" in
"")
	compose down --remove-orphans
	;;
--purge)
	compose down --remove-orphans --volumes
	if docker image inspect "$MOSAIC_IMAGE" >/dev/null 2>&1; then
		docker rmi "$MOSAIC_IMAGE"
	fi
	rm -rf "$context"
	;;
*)
	echo "usage: $0 [--purge]" >&2
	exit 2
	;;
esac
