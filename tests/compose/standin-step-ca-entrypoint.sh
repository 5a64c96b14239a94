#!/bin/bash
# TEST FIXTURE: the ENTRYPOINT of the stand-in for smallstep/step-ca (standin-step-ca.Dockerfile).
# Like the official image's entrypoint it runs the command once a CA exists in $STEPPATH. The official
# image's auto-init (DOCKER_STEPCA_INIT_* variables) is not reproduced: app-pki never uses it
# (its one-shot init service runs scripts/init-ca.sh), so without a CA this refuses, as the official
# image does when those variables are missing.
set -eo pipefail

STEPPATH=$(step path 2>/dev/null || echo "${STEPPATH:-/home/step}")
export STEPPATH

if [ ! -f "${STEPPATH}/config/ca.json" ]; then
  echo "there is no ca.json config file; please run step ca init (this test stand-in has no DOCKER_STEPCA_INIT_ auto-init)" >&2
  exit 1
fi

exec "$@"
