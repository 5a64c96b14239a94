"""Bulk Enrollment: many sites from a CSV file or a pasted list, checked first, then done as a job that
goes on in the background and survives interruptions."""

import datetime as dt

import streamlit as st

from pki.bulk import TEMPLATE, JobStatus, Mode, Outcome, Plan
from pki.enrollment import MAX_TOKEN_HOURS
from pki.model import Kind
from pki.roles import Role
from views import common
from views.tables import table_of

st.title("Bulk Enrollment")
settings = common.settings()
fleet = common.fleet()
common.only(Role.OPERATOR, "enrol sites in bulk")
st.caption(
    "Enrol many sites at once: upload a CSV file (columns site, sans, note) or paste one site name per line. "
    "Every row is checked before anything happens. The job goes on if you leave this page or close the "
    "browser; interrupted (CA down, GUI restarted), it resumes where it stopped, and a site never gets a "
    "second certificate."
)
st.download_button(
    "Download the CSV template", TEMPLATE, file_name="sites-template.csv", mime="text/csv",
    icon=":material/download:", on_click="ignore",
)  # fmt: skip

MODES = {
    Mode.TOKENS: "Enrolment tokens (recommended: each site makes its own key with enroll-site.sh)",
    Mode.CERTIFICATES: "Certificates made here, handed out as encrypted bundles",
}
mode = st.radio("What each site gets", list(MODES), format_func=MODES.__getitem__, key="bulk_mode")
with st.form("bulk"):
    if mode is Mode.TOKENS:
        lifetime = st.number_input(f"Tokens valid for (hours, 1 to {MAX_TOKEN_HOURS})", value=72, step=1)
    else:
        max_days = fleet.limits()[Kind.CLIENT]
        lifetime = st.number_input(f"Certificates valid for (days, 1 to {max_days})", value=min(365, max_days), step=1)
    broker = st.text_input("Broker address the sites dial", value=settings.broker_address)
    upload = st.file_uploader("CSV file of sites", type=["csv", "txt"])
    pasted = st.text_area("Or paste site names, one per line", placeholder="site-001\nsite-002")
    checked = st.form_submit_button("Check the list", type="primary")

if checked and not upload and not pasted.strip():
    st.warning("Choose a CSV file or paste site names first (a file still uploading is not there yet).")
elif checked:
    st.session_state.pop("bulk_plan", None)
    text = upload.getvalue().decode("utf-8", errors="replace") if upload else pasted
    name = upload.name if upload else "pasted list"
    try:
        st.session_state["bulk_plan"] = fleet.bulk_plan(
            common.actor(), text, source_name=name, mode=mode, lifetime=lifetime, broker=broker
        )
    except common.FAILED as exc:
        common.show_failure(exc, "Checking the list")

planned: Plan | None = st.session_state.get("bulk_plan")
if planned is not None:
    st.subheader("Check")
    todo, skipped, problems = planned.todo, planned.skipped, planned.problems
    st.markdown(
        f"**{len(todo)}** to enrol ({planned.mode.value}), **{len(skipped)}** need nothing, "
        f"**{len(problems)}** wrong as written (left out)."
    )
    if planned.earlier_job:
        st.info(
            f"This file was started before as job {planned.earlier_job}: what that job did is skipped below.",
            icon=":material/history:",
        )
    st.dataframe(
        table_of(
            {
                "Line": r.line,
                "Site": r.identity or r.typed,
                "SANs": " ".join(r.sans),
                "Note": r.note,
                "Check": "to enrol" if r.todo else ("skip" if r.skip else "WRONG"),
                "Why": r.problem or r.skip or ("typed " + r.typed if r.typed.strip() != r.identity else ""),
            }
            for r in planned.rows
        ),
        hide_index=True,
    )
    if st.button(f"Enrol {len(todo)} sites", type="primary", disabled=not todo, icon=":material/play_arrow:"):
        try:
            job_id = fleet.bulk_start(common.actor(), planned)
        except common.FAILED as exc:
            common.show_failure(exc, "Starting the job")
        else:
            st.session_state.pop("bulk_plan", None)
            st.session_state["bulk_job"] = job_id
            st.rerun()


def _eta(job: JobStatus) -> str:
    if job.finished:
        return "finished"
    if not job.running:
        return "interrupted"
    if job.waiting:
        return f"waiting: {job.waiting}"
    seconds = job.seconds_left
    rate = f"{job.rate:.1f} sites/s"
    return f"{rate}, about {dt.timedelta(seconds=round(seconds))} left" if seconds is not None else rate


def _downloads(job: JobStatus) -> None:
    """What a job hands out. Tokens and passphrases are shown on the page, never offered as files: Streamlit
    serves a file at a URL that anyone who has it may fetch, without a session."""
    if not job.counts[Outcome.DONE]:
        return
    key = f"bulk_out_{job.id}"
    if job.mode is Mode.TOKENS:
        label = "Show the commands for the sites (they hold the tokens)"
    else:
        label = "Prepare the bundles (a ZIP of per-site bundles; the passphrases shown here)"
    if st.button(label, key=f"prepare_{job.id}", icon=":material/inventory_2:"):
        try:
            if job.mode is Mode.TOKENS:
                st.session_state[key] = (None, fleet.bulk_commands(common.actor(), job.id).decode(), 0)
            else:
                data, phrases, count = fleet.bulk_bundles(common.actor(), job.id)
                st.session_state[key] = (data, phrases.decode(), count)
        except common.FAILED as exc:
            common.show_failure(exc, "Preparing what the sites get")
    prepared = st.session_state.get(key)
    if not prepared:
        return
    data, text, count = prepared
    if data is None:
        st.caption(
            "site, token expiry, command (CSV; the copy button is at the top right). Each command holds its "
            "site's token, a secret until it is used: paste it on that site only. Tokens used, expired or "
            "cancelled meanwhile, and those of sites that have a certificate meanwhile, are left out."
        )
        st.code(text, language=None)
        if settings.enroll_script.is_file():
            st.download_button(
                "Download enroll-site.sh", settings.enroll_script.read_bytes(), file_name="enroll-site.sh",
                mime="text/x-shellscript", key=f"script_{job.id}", icon=":material/download:", on_click="ignore",
            )  # fmt: skip
        return
    st.download_button(
        f"Download {count} bundles (ZIP)", data, file_name=f"bundles-{job.id}.zip", mime="application/zip",
        key=f"zip_{job.id}", icon=":material/download:", on_click="ignore",
    )  # fmt: skip
    st.caption(
        "Each bundle's key is encrypted with its own passphrase, below (site, serial, passphrase; CSV). Send "
        "the passphrases by another way than the bundles: each opens only its own site's key."
    )
    st.code(text, language=None)


def _job(job: JobStatus) -> None:
    if job.problem and not job.total:
        st.error(job.problem, icon=":material/error:")
        return
    counts = job.counts
    finished = sum(counts.values())
    st.markdown(
        f"**Job {job.id}** ({job.mode.value}, {job.source_name}, by {job.created_by}, "
        f"{job.created:%Y-%m-%d %H:%M} UTC): {counts[Outcome.DONE]} done, {counts[Outcome.SKIPPED]} skipped, "
        f"{counts[Outcome.FAILED]} failed of {job.total}"
    )
    st.progress(finished / job.total if job.total else 1.0, text=_eta(job))
    if job.problem:
        st.error(f"The last run stopped: {job.problem}. Fix that, then Resume.", icon=":material/error:")
    if job.running and st.button("Stop", key=f"stop_{job.id}", icon=":material/stop:"):
        try:
            fleet.bulk_stop(common.actor(), job.id)
        except common.FAILED as exc:
            common.show_failure(exc, "Stopping the job")
    if not job.finished and not job.running and st.button("Resume", key=f"resume_{job.id}", icon=":material/replay:"):
        try:
            fleet.bulk_resume(common.actor(), job.id)
        except common.FAILED as exc:
            common.show_failure(exc, "Resuming the job")
        st.rerun()
    if job.finished or not job.running:
        not_done = [r for r in job.results.values() if r.outcome is not Outcome.DONE]
        if not_done:
            with st.expander(f"Rows not done ({len(not_done)})"):
                st.dataframe(
                    table_of(
                        {"Line": r.line, "Site": r.identity, "Outcome": r.outcome.value, "Why": r.why} for r in not_done
                    ),
                    hide_index=True,
                )
        _downloads(job)


def _statuses() -> list[JobStatus]:
    try:
        return fleet.bulk_jobs(common.actor())
    except common.FAILED as exc:
        common.show_failure(exc, "Listing the jobs")
        return []


polling = any(job.running for job in _statuses())


@st.fragment(run_every=1.0 if polling else None)
def jobs() -> None:
    """The jobs, redrawn every second while one runs (a whole rerun once none does, which stops that)."""
    statuses = _statuses()
    if polling and not any(job.running for job in statuses):
        st.rerun()
    if not statuses:
        st.caption("No bulk job was started here yet.")
        return
    for job in statuses[:10]:
        with st.container(border=True):
            _job(job)


st.subheader("Jobs")
jobs()
