"""Alerts: the channels, the last runs and what they sent, and a test alert (pki.alerts sends them)."""

import os

import streamlit as st

from pki.alerts import Alerts, alert_config
from pki.roles import Role
from pki.settings import data_dir
from views import common
from views.tables import table_of

st.title("Alerts")
config = alert_config(os.environ)
alerts = Alerts(common.fleet(), config, data_dir(os.environ) / "alerts-state.json")

channels = {
    "E-mail": f"{config.smtp_host}:{config.smtp_port} ({config.smtp_security}) to {', '.join(config.mail_to)}"
    if config.smtp_host
    else "not set (PKI_ALERT_SMTP_HOST)",
    "Webhook": "set (PKI_ALERT_WEBHOOK_URL_FILE)" if config.webhook_url else "not set (PKI_ALERT_WEBHOOK_URL_FILE)",
}
st.dataframe(table_of({"Channel": k, "Where": v} for k, v in channels.items()), hide_index=True)
st.caption(
    f"Thresholds: sites {'/'.join(map(str, config.site_days))} days, brokers "
    f"{'/'.join(map(str, config.broker_days))} days; renewal overdue at 75 % of a site's life; the CRL "
    f"{config.crl_hours:g} h before its next update; the CA after {config.ca_down_minutes:g} min unreachable. "
    "Each event is sent once per channel. The runs: the pki-alerts service (compose), or scripts/alerts.sh run."
)

state = alerts.state()
last = state.get("last_run")
if not last:
    st.info("No alert run yet.", icon=":material/info:")
else:
    st.subheader("Last run")
    st.write(f"{last['time']}: {last['found']} condition(s) true, sent {last['sent'] or 'nothing new'}.")
    for channel, error in last.get("failed", {}).items():
        st.error(f"Sending by {channel} failed: {error}. The same alerts are tried again next run.")
    st.dataframe(table_of(reversed(state.get("history", []))), hide_index=True)
    sent = [
        {"Channel": channel, "Event": key, "Sent": when}
        for channel, keys in state.get("sent", {}).items()
        for key, when in keys.items()
    ]
    if sent:
        st.subheader("Sent")
        st.dataframe(table_of(sorted(sent, key=lambda row: str(row["Sent"]), reverse=True)), hide_index=True)

if common.may(Role.OPERATOR) and config.channels and st.button("Send a test alert", icon=":material/send:"):
    answers = alerts.test()
    common.gate().audit.record("alert-test", actor=common.actor(), answers=answers)
    for channel, answer in answers.items():
        (st.success if answer == "ok" else st.error)(f"{channel}: {answer}")
