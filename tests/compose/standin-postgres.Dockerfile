# TEST FIXTURE, not a product image. It stands in for the official `postgres:15-bookworm`, which no
# registry can give on the test machines (no container registry is reachable), so that docker-compose.yml's
# `ha` profile runs unchanged. Built by tests/compose/standins.sh, labelled org.app-pki.test-fixture=true.
#
# local/bookworm-postgres: a Debian bookworm minbase root file system from debootstrap with Debian's
#           postgresql-15 (the official image's major version). Debian picks the postgres user's uid, which
#           may differ from the official 999: the passwords app-pki gives it are readable by uid 999 only,
#           so the entrypoint makes postgres 999 before anything else.
# entrypoint: tests/compose/standin-postgres-entrypoint.sh, the official entrypoint's behaviour that
#           app-pki relies on (POSTGRES_PASSWORD_FILE, docker-entrypoint-initdb.d/*.sh, listen on all).
FROM local/bookworm-postgres
LABEL org.app-pki.test-fixture=true
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN groupmod -g 999 postgres && usermod -u 999 -g 999 postgres \
    && mkdir -p /docker-entrypoint-initdb.d /var/run/postgresql /var/lib/postgresql/data \
    && chown -R postgres:postgres /var/run/postgresql /var/lib/postgresql /etc/postgresql \
    && chmod 2777 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["bash", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
