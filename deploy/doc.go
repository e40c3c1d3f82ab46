// Package deploy holds what runs Switchyard in containers: the Prometheus
// configuration (prometheus/), the development-secrets generator
// (gen-secrets.sh, writing secrets/) and, at the repository root, the
// Dockerfile and docker-compose.yml.
//
// Its tests check them without a container engine: the compose file is
// loaded with compose-go and checked against the variables the binary
// knows, and the Dockerfile's build command is run as a plain go build on
// the build context .dockerignore leaves.
package deploy
