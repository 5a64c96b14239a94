# TEST FIXTURE, not a product image. It stands in for the official `haproxy:2.6-bookworm`, which no registry
# can give on the test machines (no container registry is reachable), so that docker-compose.yml's `ha`
# profile runs unchanged. Built by tests/compose/standins.sh, labelled org.app-pki.test-fixture=true.
#
# local/bookworm-haproxy: a Debian bookworm minbase root file system from debootstrap with Debian's haproxy
#           (2.6). As in the official image: the configuration at /usr/local/etc/haproxy/haproxy.cfg, the
#           haproxy user, the master-worker mode in the foreground, SIGUSR1 to stop.
FROM local/bookworm-haproxy
LABEL org.app-pki.test-fixture=true
RUN mkdir -p /usr/local/etc/haproxy /var/lib/haproxy && chown haproxy:haproxy /var/lib/haproxy
USER haproxy
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
