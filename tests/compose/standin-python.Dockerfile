# TEST FIXTURE, not a product image. It stands in for the official `python:3.11-slim-bookworm`, which no
# registry can give on the test machines (no container registry is reachable), so that the project's
# Dockerfiles build unchanged. Built by tests/compose/standins.sh, labelled org.app-pki.test-fixture=true.
#
# local/bookworm-python: a Debian bookworm minbase root file system from debootstrap with Debian's
#           python3 (3.11), python3-pip and python-is-python3 (the project's CMD runs `python`).
# wheels/:  the wheels of streamlit/requirements.txt (and their dependencies), pre-downloaded on the
#           host for CPython 3.11 / manylinux x86_64. Containers have no egress: pip installs from here.
FROM local/bookworm-python
LABEL org.app-pki.test-fixture=true
# The official image's python is not Debian's: pip may install into the system there.
RUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
COPY wheels /wheels
ENV LANG=C.UTF-8 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels
CMD ["python3"]
