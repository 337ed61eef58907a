# Sourced by up.sh and down.sh: paths, names and the compose command.

deploy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$deploy")"
# The image the compose file runs (it reads MOSAIC_IMAGE too).
export MOSAIC_IMAGE="${MOSAIC_IMAGE:-mosaic:local}"
# Names the containers, network and volumes: mosaic_m1_1, mosaic_mosaic, mosaic_m1-data, ...
project="${MOSAIC_COMPOSE_PROJECT:-mosaic}"
# The build context of deploy/Dockerfile (MOSAIC_BUILD_DIR: another directory, as the Docker
# test in tests/deploy_test.go uses).
context="${MOSAIC_BUILD_DIR:-$deploy/build}"

# compose runs Docker Compose on deploy/docker-compose.yml: the `docker compose` plugin where
# there is one, else the standalone docker-compose.
compose() {
	if docker compose version >/dev/null 2>&1; then
		docker compose -p "$project" -f "$deploy/docker-compose.yml" "$@"
	elif command -v docker-compose >/dev/null 2>&1; then
		docker-compose -p "$project" -f "$deploy/docker-compose.yml" "$@"
	else
		echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
		return 1
	fi
}
