# TEST FIXTURE, not a product image. It stands in for the official `smallstep/step-ca:0.30.2`, which no
# registry can give on the test machines (no container registry is reachable), so that the project's
# ca/Dockerfile and docker-compose.yml run unchanged. Built by tests/compose/standins.sh, labelled
# org.app-pki.test-fixture=true.
#
# Unlike the official image (Alpine, busybox) this is Debian bookworm with GNU coreutils/diffutils:
# it cannot show busybox differences in the project's scripts.
#
# local/bookworm-step-ca: a Debian bookworm minbase root file system from debootstrap with curl and
#           ca-certificates (bash, coreutils, diffutils are in minbase).
# step, step-ca: the pinned binaries scripts/install-step.sh builds (step v0.30.6, step-ca v0.30.2).
# entrypoint.sh: tests/compose/standin-step-ca-entrypoint.sh.
# User, ENV, VOLUME, STOPSIGNAL, HEALTHCHECK, ENTRYPOINT and CMD as in the official image
# (smallstep/cli and smallstep/certificates docker/Dockerfile at v0.30.2).
FROM local/bookworm-step-ca
LABEL org.app-pki.test-fixture=true
# Copied with their mode from the build context (0755), so that no later layer copies them again.
COPY step step-ca /usr/local/bin/
COPY entrypoint.sh /entrypoint.sh
RUN groupadd --gid 1000 step \
    && useradd --uid 1000 --gid 1000 --home-dir /home/step --no-create-home --shell /bin/bash step \
    && mkdir -p /home/step \
    && chown step:step /home/step
USER step
WORKDIR /home/step
ENV STEP="/home/step" \
    STEPPATH="/home/step" \
    CONFIGPATH="/home/step/config/ca.json" \
    PWDPATH="/home/step/secrets/password"
VOLUME ["/home/step"]
STOPSIGNAL SIGTERM
HEALTHCHECK CMD step ca health 2>/dev/null | grep "^ok" >/dev/null
ENTRYPOINT ["/bin/bash", "/entrypoint.sh"]
CMD ["/usr/local/bin/step-ca", "--password-file", "/home/step/secrets/password", "/home/step/config/ca.json"]
