"""Dashboard: the CRL, certificate counts, what expires soon, the expiry wave, the CRL."""

import streamlit as st

from views import common
from views.tables import table_of

st.title("Dashboard")
settings = common.settings()
fleet_table = common.table()
now, crl = fleet_table.now, fleet_table.crl.info

# The CA's health is in the sidebar, and a banner above says when it is down: not a third time here.
if crl:
    next_update = f"{crl.next_update:%Y-%m-%d %H:%M} UTC" if crl.next_update else "not set"
    st.info(
        f"**CRL** issued {crl.last_update:%Y-%m-%d %H:%M} UTC, next update {next_update}; "
        f"{len(crl.revoked)} revoked serial(s).",
        icon=":material/verified_user:",
    )
else:
    st.warning(f"**CRL unavailable.** {fleet_table.crl.problem}", icon=":material/warning:")

locked = common.gate().throttle.locked_addresses()
if locked:
    st.warning(
        f"**{len(locked)} locked out** after failed logins: "
        + ", ".join(f"{key} ({seconds / 60:.0f} min left)" for key, seconds in locked.items())
        + ". The Audit page has the tries.",
        icon=":material/lock:",
    )

disagreements = common.disagreements(fleet_table)
if disagreements:
    st.warning(
        f"**{len(disagreements)} disagreement(s)** between certs/, the CA's records and its CRL: certificates "
        "in quarantine, valid at the CA but filed as archived, signed but not filed, held twice, or from "
        "another CA.",
        icon=":material/rule:",
    )
    st.page_link("views/reconcile.py", label="Go to Reconcile", icon=":material/rule:")

for row in fleet_table.server_warnings(settings.server_warning_days):
    st.warning(
        f"Broker certificate **{row.cn}** expires in {row.record.days_left(now)} days "
        f"({row.record.not_after:%Y-%m-%d}). Brokers cannot renew: re-issue it on View Certificates "
        "and install the new one on the broker.",
        icon=":material/schedule:",
    )

counts = fleet_table.counts(settings.expiring_days, settings.server_warning_days)
sites_col, brokers_col, expiring_col, revoked_col = st.columns(4)
sites_col.metric("Sites", counts.sites, help="Sites with a valid certificate (renewals count once).")
brokers_col.metric("Brokers", counts.brokers, help="Brokers with a valid certificate (re-issues count once).")
expiring_col.metric(
    "Expiring",
    counts.expiring,
    help=f"Sites whose certificate expires within {settings.expiring_days} days (they should have renewed), and "
    f"brokers as warned above: within {settings.server_warning_days} days and the last third of the "
    "certificate's life.",
)
revoked_col.metric("Revoked", counts.revoked, help="Revoked certificates, each serial once.")

st.subheader("Certificates by type")
by_type = fleet_table.by_type
st.dataframe(
    table_of([{"Status": status.value} | {k.value: n for k, n in kinds.items()} for status, kinds in by_type.items()]),
    width="content",
    hide_index=True,
)

st.subheader("Expiring soon")
threshold = st.number_input(
    "Show certificates that expire within (days)",
    min_value=1,
    max_value=max(3650, settings.expiring_days),
    value=settings.expiring_days,
    step=1,
)
soon = fleet_table.expiring_within(int(threshold))
if soon:
    st.dataframe(table_of(row.as_dict(now) for row in soon), hide_index=True)
else:
    st.caption(f"No certificate expires within {threshold} days.")

st.subheader("Expiries per week, next 12 months")
weeks = fleet_table.weeks
if any(count for _, count in weeks):
    # A Vega-Lite spec, not st.bar_chart: that one imports Altair, half a second of the first page after a start.
    st.vega_lite_chart(
        table_of({"week": str(week), "certificates": count} for week, count in weeks),
        {
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {
                "x": {"field": "week", "type": "ordinal", "title": "week starting"},
                "y": {"field": "certificates", "type": "quantitative", "title": "certificates expiring"},
            },
        },
    )
else:
    st.caption("No certificate expires within the next 12 months.")
