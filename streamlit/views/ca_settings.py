"""CA Settings: where the CA is, its root and fingerprint, the CRL, provisioners, the bootstrap command."""

import streamlit as st

from pki.step import StepError
from views import common
from views.tables import table_of

st.title("CA Settings")
settings = common.settings()
fleet = common.fleet()


@st.cache_data(show_spinner=False)
def root_fingerprint(root: str, mtime: float) -> str:
    return fleet.ca.root_fingerprint()


st.subheader("Addresses")
st.markdown(
    f"**CA URL (this GUI)** `{settings.ca_url}`  \n**Public CA URL (sites)** `{settings.public_ca_url}`  \n"
    f"**CRL URL (in every certificate)** `{settings.crl_url}`"
)

st.subheader("Root of trust")
try:
    fingerprint = root_fingerprint(str(settings.root), settings.root.stat().st_mtime)
    root_pem, intermediate_pem = settings.root.read_bytes(), settings.intermediate.read_bytes()
except (StepError, OSError) as exc:
    st.error(f"The CA's certificates cannot be read: {exc}", icon=":material/error:")
    st.stop()
st.markdown(f"**Root fingerprint (SHA-256)**  \n`{fingerprint}`")
left, right, crl_col = st.columns(3)
left.download_button("Root certificate", root_pem, "root_ca.crt", icon=":material/download:", on_click="ignore")
right.download_button(
    "Intermediate certificate", intermediate_pem, "intermediate_ca.crt", icon=":material/download:", on_click="ignore"
)
crl = fleet.crl()
if crl.info and not crl.problem:
    crl_col.download_button("CRL (PEM)", crl.info.pem, "crl.pem", icon=":material/download:", on_click="ignore")
else:
    crl_col.warning(f"CRL unavailable: {crl.problem}")

st.subheader("Bootstrap a site")
st.caption("Run this on a site (or a broker) to trust this CA. The copy button is at the top right of the box.")
st.code(
    f"step ca bootstrap --ca-url {settings.public_ca_url} --fingerprint {fingerprint}", language="bash", wrap_lines=True
)

st.subheader("Scripts for sites and brokers")
st.caption(
    "enroll-site.sh puts a site on the fleet (Enroll a Site shows the command); refresh-crl.sh keeps a Mosquitto "
    "broker's CRL current (README.md, The broker side). A download is not executable: run them with bash."
)
site_col, broker_col, _ = st.columns(3)
for column, script in ((site_col, settings.enroll_script), (broker_col, settings.refresh_script)):
    if script.is_file():
        column.download_button(
            script.name, script.read_bytes(), script.name, mime="text/x-shellscript", icon=":material/download:",
            on_click="ignore",
        )  # fmt: skip

st.subheader("Provisioners")
provisioners, problem = fleet.provisioners()
if provisioners is None:
    st.error(f"The provisioners cannot be listed: {problem}")
else:
    roles = {
        "admin": "super-admin of the CA (password stays with the CA)",
        settings.client_provisioner: "client certificates (clientAuth only)",
        settings.server_provisioner: "server certificates (serverAuth only)",
    }

    def days(value: int | None) -> str:
        return str(value) if value else "1 (step-ca's default)"

    st.dataframe(
        table_of(
            {
                "Name": p.name,
                "Type": p.type,
                "Used for": roles.get(p.name, ""),
                "Default validity (days)": days(p.default_days),
                "Maximum validity (days)": days(p.max_days),
            }
            for p in sorted(provisioners, key=lambda p: p.name)
        ),
        hide_index=True,
    )
