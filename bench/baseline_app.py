"""The baseline of bench/pages_bench.py: a plain Streamlit app with the Dashboard's and View Certificates'
widgets, whose table is built once (parsed with cryptography) and cached. What Streamlit itself costs.

BENCH_CERTS names the certs/ folder to read.
"""

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import streamlit as st
from cryptography import x509

COLUMNS = ["CN", "Type", "Serial", "SANs", "Issued", "Expires", "Days left", "Status", "Source"]


@st.cache_resource
def table(folder: str) -> pd.DataFrame:
    now = dt.datetime.now(dt.UTC)
    rows = []
    for crt in Path(folder).glob("*/*.crt"):
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        left = (cert.not_valid_after_utc - now).days
        rows.append(
            {
                "CN": cn,
                "Type": "server" if x509.ExtendedKeyUsageOID.SERVER_AUTH in eku else "client",
                "Serial": f"{cert.serial_number:X}",
                "SANs": ", ".join(sans),
                "Issued": cert.not_valid_before_utc.strftime("%Y-%m-%d"),
                "Expires": cert.not_valid_after_utc.strftime("%Y-%m-%d"),
                "Days left": left,
                "Status": "expiring" if left < 7 else "active",
                "Source": f"certs/{crt.parent.name}",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


frame = table(os.environ["BENCH_CERTS"])
page = st.sidebar.radio("Page", ["Dashboard", "View Certificates"])
st.title(page)
if page == "Dashboard":
    for column, (label, value) in zip(
        st.columns(4),
        [("Sites", (frame["Type"] == "client").sum()), ("Brokers", (frame["Type"] == "server").sum()),
         ("Expiring", (frame["Status"] == "expiring").sum()), ("Revoked", 0)],
        strict=True,
    ):  # fmt: skip
        column.metric(label, int(value))
    st.dataframe(frame.groupby(["Status", "Type"]).size().unstack(fill_value=0))
    st.number_input("Show certificates that expire within (days)", value=7)
    st.dataframe(frame[frame["Days left"] < 7], hide_index=True)
    weeks = pd.to_datetime(frame["Expires"]).dt.to_period("W").value_counts().sort_index()
    st.bar_chart(pd.DataFrame({"week": weeks.index.astype(str), "certificates": weeks.values}), x="week")
else:
    search_col, status_col, type_col = st.columns([2, 1, 1])
    text = search_col.text_input("Search certificates")
    statuses = status_col.multiselect("Status", ["active", "expiring", "expired", "revoked"])
    kinds = type_col.multiselect("Type", ["client", "server"])
    shown = frame
    if text:
        shown = shown[shown["CN"].str.contains(text, regex=False) | shown["Serial"].str.contains(text.upper())]
    if statuses:
        shown = shown[shown["Status"].isin(statuses)]
    if kinds:
        shown = shown[shown["Type"].isin(kinds)]
    st.caption(f"{len(shown)} of {len(frame)} certificates.")
    st.dataframe(shown, on_select="rerun", selection_mode="single-row", hide_index=True, key="table")
