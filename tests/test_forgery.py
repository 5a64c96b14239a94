"""Forged widget values over the websocket: what a client that skips the pages gets.

The pages hide the forms a role lacks, but a page is only what the server chose to send: a client can
talk to Streamlit's websocket (/_stcore/stream) itself and claim that any widget holds any value, that
any form's submit button was pressed, that it is on any page. These tests do exactly that against the
GUI as `make run` starts it (python -m pki.serve) and a real step-ca, with no browser and nothing mocked:

- the widget ids are learned the honest way, from what the server sends an operator (otto) and an admin
  (ada) who log in over the same websocket; the ids are deterministic (a hash of the widget's label,
  options, form and page), so they are the ids a forger would compute or copy from their own browser;
- the same messages that issue, revoke and add an account for otto and ada (the controls, which show
  the forged messages have the right shape) are then sent by a viewer (vera) and by a client that
  never logged in, on the form's page, on the default page and by page name;
- the outcome is read where it lands, not on the page: the CA's journal and CRL, certs/, users.json and
  the audit trail. And no forged message may earn its sender a traceback or a server path.

The messages are the ones Streamlit's own frontend sends: a BackMsg `rerun_script` whose ClientState
names the page and carries the widget states (a form submit is its button's trigger_value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from conftest import REPO, GuiProcess, RunningCA, gui_fleet, started_ca
from pki.accounts import PASSWORD_MIN, UserStore
from pki.audit import AuditLog
from pki.roles import SHELL, Role

ACCOUNTS = {"ada": Role.ADMIN, "otto": Role.OPERATOR, "vera": Role.VIEWER}
TARGET = "forgery-target"
"""The certificate otto issues (the issue control) and that the forgers then try to revoke."""
FORGED_CN = "forged-by-vera"
"""The certificate the forgers try to have issued."""
FORGED_ACCOUNT = "mallory"
"""The account the forgers try to add (as an admin)."""
CHANGES = {"sign", "issue", "reissue", "revoke", "bundle", "download-key", "enroll", "file", "mark-foreign"}
"""Audit actions that change the fleet or hand out a key; with user-* they are what a viewer may not do."""
REDACTED = "The original error message is redacted to prevent data leaks."
"""What Streamlit shows instead of an exception when client.showErrorDetails is none (pki.serve sets it)."""
RECV_SECONDS = 60.0
"""Longest wait for one message: an issue is a key, a CA round trip and a CRL fetch."""


def password_of(name: str) -> str:
    return f"the password of {name}"


# -- the websocket client ----------------------------------------------------------------------------


@dataclass
class Run:
    """What the server sent for one rerun the client asked for (including any st.rerun it caused)."""

    messages: list[ForwardMsg]

    def elements(self) -> list[tuple[str, Any]]:
        """Each element the script drew, as (its type, its proto): heading, alert, text_input, button..."""
        found: list[tuple[str, Any]] = []
        for msg in self.messages:
            if msg.WhichOneof("type") == "delta" and msg.delta.WhichOneof("type") == "new_element":
                kind = msg.delta.new_element.WhichOneof("type")
                found.append((kind, getattr(msg.delta.new_element, kind)))
        return found

    @property
    def text(self) -> str:
        """All headings, markdown and alerts, one per line: what a person would read on the page."""
        kinds = {"heading", "markdown", "alert", "text"}
        return "\n".join(element.body for kind, element in self.elements() if kind in kinds)

    def widget(self, kind: str, label: str) -> Any:
        """The widget of that type and label (its proto holds the id, the options and the form)."""
        matches = [element for k, element in self.elements() if k == kind and element.label == label]
        assert len(matches) == 1, f"no single {kind} {label!r} among {[(k, e.label) for k, e in self.widgets()]}"
        return matches[0]

    def widgets(self) -> list[tuple[str, Any]]:
        return [(kind, element) for kind, element in self.elements() if hasattr(element, "id") and element.id]

    def pages(self) -> dict[str, str]:
        """The pages the navigation offered, title to page_script_hash (none before a login)."""
        return {
            page.page_name: page.page_script_hash
            for msg in self.messages
            if msg.WhichOneof("type") == "navigation"
            for page in msg.navigation.app_pages
        }

    def page(self) -> str:
        """The page_script_hash of the page the server ran (the navigation says; "" before a login)."""
        shown = [msg.navigation.page_script_hash for msg in self.messages if msg.WhichOneof("type") == "navigation"]
        return shown[-1] if shown else ""

    def errors(self) -> list[Any]:
        """The exception elements the script drew (with client.showErrorDetails none, Streamlit puts a
        generic "This app has encountered an error" in them, with no type and no stack trace)."""
        return [element for kind, element in self.elements() if kind == "exception"]

    def leaks(self) -> list[str]:
        """Anything in the deltas that tells the client about the server's insides: an exception's type,
        message details or stack trace, a traceback, a path on the server. NewSession is left out on
        purpose: Streamlit itself sends every client the app's main_script_path (Streamlit's own doing)."""
        found = [
            f"exception details: {e}" for e in self.errors() if e.type or e.stack_trace or REDACTED not in e.message
        ]
        for msg in self.messages:
            if msg.WhichOneof("type") != "delta":
                continue
            raw = msg.SerializeToString()
            for needle in (b"Traceback", b"site-packages", str(REPO).encode(), b'File "'):
                if needle in raw:
                    found.append(f"{needle.decode()!r} in {str(msg)[:300]}")
        return found


class Stream:
    """One browser tab as the server sees it: a websocket to /_stcore/stream speaking Streamlit's
    protobufs. Nothing else is needed to talk to the app: no cookie, no XSRF token (Streamlit checks
    those only to read a single sign-on cookie) and no Origin header (a non-browser client may omit it)."""

    def __init__(self, gui: GuiProcess) -> None:
        self._url = gui.url.replace("http", "ws", 1) + "/_stcore/stream"
        self._socket: ClientConnection | None = None

    def __enter__(self) -> Stream:
        # "streamlit" is the subprotocol the frontend asks for; its 2nd and 3rd entries (XSRF token, a
        # session to reconnect to) are optional. proxy=None: loopback, whatever the environment says.
        self._socket = connect(
            self._url, subprotocols=[Subprotocol("streamlit")], proxy=None, open_timeout=10, max_size=2**24
        ).__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._socket is not None:
            self._socket.__exit__(kind, exc, tb)

    def rerun(self, page: str = "", widgets: Iterable[WidgetState] = (), page_name: str = "") -> Run:
        """Ask for a run of `page` (a page_script_hash; "" is the default page, or the one `page_name`
        names, as a URL path does) with these widget values, and collect what comes back until the script
        finishes for good (a st.rerun ends a run early and starts the next: both are collected)."""
        assert self._socket is not None
        back = BackMsg()
        back.rerun_script.query_string = ""
        back.rerun_script.page_script_hash = page
        back.rerun_script.page_name = page_name
        back.rerun_script.widget_states.widgets.extend(widgets)
        self._socket.send(back.SerializeToString())
        messages: list[ForwardMsg] = []
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(self._socket.recv(timeout=RECV_SECONDS))
            messages.append(msg)
            if (
                msg.WhichOneof("type") == "script_finished"
                and msg.script_finished != ForwardMsg.ScriptFinishedStatus.FINISHED_EARLY_FOR_RERUN
            ):
                return Run(messages)


LOGIN_PAGE = [("heading", "app-pki"), ("text_input", "User name"), ("text_input", "Password"), ("button", "Log in")]
"""All a client that has not logged in is shown (views/common.py require_login)."""


def drawn(run: Run) -> list[tuple[str, str]]:
    """The elements of a run as (type, label or text), to compare with what a page should show."""
    return [(kind, getattr(element, "label", "") or getattr(element, "body", "")) for kind, element in run.elements()]


def text_value(widget: Any, value: str) -> WidgetState:
    """A text_input's, text_area's, radio's or selectbox's value: the string the frontend sends (for
    radio and selectbox the option as shown)."""
    return WidgetState(id=widget.id, string_value=value)


def list_value(widget: Any, values: Iterable[str]) -> WidgetState:
    """A multiselect's value: the options as shown."""
    state = WidgetState(id=widget.id)
    state.string_array_value.data.extend(values)
    return state


def pressed(button: Any) -> WidgetState:
    """A button (a form's submit button) that was just clicked."""
    return WidgetState(id=button.id, trigger_value=True)


def log_in(stream: Stream, name: str) -> Run:
    """Fill in and submit the login form as the frontend does, with the ids the first run showed."""
    form = stream.rerun()
    done = stream.rerun(
        widgets=[
            text_value(form.widget("text_input", "User name"), name),
            text_value(form.widget("text_input", "Password"), password_of(name)),
            pressed(form.widget("button", "Log in")),
        ]
    )
    assert f"Logged in as **{name}** ({ACCOUNTS[name]})" in done.text, done.text
    return done


# -- the GUI, the CA, and the forms as an operator and an admin see them --------------------------------


@dataclass
class Stage:
    ca: RunningCA
    gui: GuiProcess
    pages: dict[str, str]
    """Every page title to its page_script_hash, as the navigation told an admin."""
    issue_form: Run
    """The Issue Certificate page as otto saw it (every field of the form and its submit button)."""
    revoke_form: Run
    """The Revoke Certificate page as otto saw it with TARGET chosen (the form appears then)."""
    users_form: Run
    """The Users page as ada saw it."""
    target_serial: int

    @property
    def users_file(self) -> Path:
        return self.gui.base / "data" / "users.json"

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.gui.base / "data" / "audit.log").read_text().splitlines()]

    def journal(self) -> str:
        return self.ca.journal.read_text() if self.ca.journal.exists() else ""

    def revoked(self) -> frozenset[int]:
        """The serials on the CA's CRL now (a Fleet of its own, so that nothing is cached)."""
        revoked = gui_fleet(self.ca, self.ca.base / "observer").crl().revoked
        assert revoked is not None, "the CA's CRL could not be fetched"
        return revoked


def issue_states(form: Run, cn: str) -> list[WidgetState]:
    """Everything the Issue form (as `form` showed it) sends when submitted: a client certificate for
    `cn`, 30 days."""
    return [
        text_value(form.widget("text_input", "Common name (CN)"), cn),
        text_value(form.widget("radio", "Type"), "Client (site)"),
        text_value(form.widget("radio", "Validity"), "30 days"),
        text_value(form.widget("selectbox", "Key type"), "EC P-256"),
        pressed(form.widget("button", "Issue certificate")),
    ]


def revoke_states(form: Run) -> list[WidgetState]:
    """Everything the Revoke page (as `form` showed it, TARGET chosen) sends to revoke every certificate
    of TARGET, confirmed by its name."""
    chooser = form.widget("selectbox", "Certificate")
    serials = form.widget("multiselect", f"Certificates of {TARGET} to revoke")
    return [
        text_value(chooser, chooser.options[0]),
        list_value(serials, serials.options),
        text_value(form.widget("text_input", "Type the common name to confirm"), TARGET),
        pressed(form.widget("button", "Revoke certificate")),
    ]


def add_user_states(form: Run, name: str, role: Role) -> list[WidgetState]:
    """Everything the Users page's "Add an account" form (as `form` showed it) sends, with the password of
    ada, the admin who confirms account changes with it (a forger would have to know it too)."""
    return [
        text_value(form.widget("text_input", "Your own password, to confirm the new account"), password_of("ada")),
        text_value(form.widget("text_input", "New user name"), name),
        text_value(form.widget("selectbox", "Role"), role.value),
        text_value(
            form.widget("text_input", f"Initial password (at least {PASSWORD_MIN} characters)"), password_of(name)
        ),
        pressed(form.widget("button", "Add account")),
    ]


def every_forgery(stage: Stage) -> list[WidgetState]:
    """All three forged submissions in one message, as a forger in a hurry would send them."""
    return [
        *issue_states(stage.issue_form, FORGED_CN),
        *revoke_states(stage.revoke_form),
        *add_user_states(stage.users_form, FORGED_ACCOUNT, Role.ADMIN),
    ]


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    """A CA of its own, the GUI with ada, otto and vera, TARGET issued by otto over the websocket (the
    issue control), and the three forms recorded as the server showed them to otto and ada."""
    ca = started_ca(tmp_path_factory.mktemp("forgery-pki"))
    base = tmp_path_factory.mktemp("forgery-gui")
    accounts = UserStore(base / "data" / "users.json", AuditLog(base / "data" / "audit.log"))
    for name, role in ACCOUNTS.items():  # ada first: the first account must be an admin
        accounts.add(SHELL, name, role, password_of(name))
    gui = GuiProcess(ca, base)
    try:
        with Stream(gui) as admin:
            pages = log_in(admin, "ada").pages()
            users_form = admin.rerun(pages["Users"])
        with Stream(gui) as operator:
            log_in(operator, "otto")
            issue_form = operator.rerun(pages["Issue Certificate"])
            # The control for issuing: the very message issue_states builds issues for an operator.
            issued = operator.rerun(pages["Issue Certificate"], issue_states(issue_form, TARGET))
            assert f"Issued **{TARGET}**" in issued.text, issued.text
            assert not issued.errors() and not issued.leaks()
            found = re.search(r"serial `([0-9A-F]+)`", issued.text)
            assert found, issued.text
            serial = int(found.group(1), 16)
            ca.wait_in_journal(serial)
            # The Revoke form appears once an identity is chosen: choose TARGET (as the frontend sends a
            # selectbox: the option as shown), and record the form.
            chooser = operator.rerun(pages["Revoke Certificate"]).widget("selectbox", "Certificate")
            assert len(chooser.options) == 1 and chooser.options[0].startswith(TARGET), chooser.options
            revoke_form = operator.rerun(pages["Revoke Certificate"], [text_value(chooser, chooser.options[0])])
        yield Stage(ca, gui, pages, issue_form, revoke_form, users_form, serial)
    finally:
        gui.stop()
        ca.stop()


def assert_nothing_changed(stage: Stage, users_before: str, journal_before: str) -> None:
    """The CA signed nothing and revoked nothing, certs/ has no forged folder, no account was added, and
    the audit trail has no change by vera (a refusal would be fine: it is not a change)."""
    assert stage.journal() == journal_before
    assert FORGED_CN not in stage.journal()
    certs = stage.gui.base / "certs"
    assert not list(certs.glob(f"{FORGED_CN}*")), sorted(p.name for p in certs.iterdir())
    assert (certs / TARGET).is_dir() and not list(certs.glob(f"{TARGET}.revoked*"))
    assert stage.target_serial not in stage.revoked()
    assert stage.users_file.read_text() == users_before
    assert FORGED_ACCOUNT not in stage.users_file.read_text()
    for entry in stage.audit():
        if entry.get("user") == "vera" or entry.get("account") in (FORGED_ACCOUNT, FORGED_CN):
            changed = entry["action"] in CHANGES or str(entry["action"]).startswith("user-")
            assert not (changed and entry["outcome"] == "ok"), entry
        assert entry.get("cn") != FORGED_CN, entry


# -- the tests (in this order: the last one revokes TARGET, which the others try to revoke) --------------


def test_a_viewer_cannot_issue_revoke_or_add_accounts_by_forged_messages(stage: Stage) -> None:
    users_before, journal_before = stage.users_file.read_text(), stage.journal()
    with Stream(stage.gui) as viewer:
        seen = log_in(viewer, "vera").pages()
        # The viewer's navigation has no Users page; the others are there, each stopping at its role check.
        assert "Users" not in seen and seen["Issue Certificate"] == stage.pages["Issue Certificate"]

        # On the Issue page, with the form's fields filled in and its submit button pressed: the page
        # stops at the role check before the form exists, so the forged values belong to no widget.
        issue = viewer.rerun(stage.pages["Issue Certificate"], issue_states(stage.issue_form, FORGED_CN))
        assert "Your role (viewer) may not issue certificates" in issue.text
        assert not [w for _, w in issue.widgets() if w.label == "Common name (CN)"]

        # On the Revoke page with TARGET chosen, confirmed and submitted.
        revoke = viewer.rerun(stage.pages["Revoke Certificate"], revoke_states(stage.revoke_form))
        assert "Your role (viewer) may not revoke certificates" in revoke.text

        # The Users page is not in a viewer's navigation: asked for by its hash or its URL path, the
        # server runs the default page (Dashboard) instead, without a word.
        for by_hash, by_name in ((stage.pages["Users"], ""), ("", "users")):
            users = viewer.rerun(
                by_hash, add_user_states(stage.users_form, FORGED_ACCOUNT, Role.ADMIN), page_name=by_name
            )
            assert users.page() == stage.pages["Dashboard"] and "Users" not in users.pages()
            assert "Dashboard" in users.text and "Add an account" not in users.text

        # Without navigating first: every forged submission at once on the default page, on the Issue page
        # by its URL path, and on every page the viewer may open.
        runs = [
            viewer.rerun("", every_forgery(stage)),
            viewer.rerun("", every_forgery(stage), page_name="issue"),
            *(viewer.rerun(page, every_forgery(stage)) for page in seen.values()),
            # A widget id naming the session-state key of the login, claiming ada: no widget has that id,
            # so Streamlit keeps the value as a serialized state no script reads; vera stays vera.
            viewer.rerun(stage.pages["Issue Certificate"], [WidgetState(id="actor", string_value="ada")]),
        ]
        for run in [issue, revoke, users, *runs]:
            assert "Logged in as **vera** (viewer)" in run.text  # still vera, still a viewer
            assert f"Issued **{FORGED_CN}**" not in run.text, run.text
            assert f"Account **{FORGED_ACCOUNT}**" not in run.text, run.text
            assert not run.errors() and not run.leaks()
    assert_nothing_changed(stage, users_before, journal_before)


def test_a_client_that_never_logged_in_gets_only_the_login_form(stage: Stage) -> None:
    users_before, journal_before = stage.users_file.read_text(), stage.journal()
    with Stream(stage.gui) as stranger:
        # Every forged submission, on every page by its hash and by its URL path.
        attempts = [stranger.rerun(page, every_forgery(stage)) for page in ("", *stage.pages.values())]
        attempts += [stranger.rerun("", every_forgery(stage), page_name=name) for name in ("issue", "revoke", "users")]
        for run in attempts:
            # Nothing but the login form: no navigation, no sidebar, no page, no message about the forms.
            assert not run.pages()
            assert drawn(run) == LOGIN_PAGE, drawn(run)
            assert not run.errors() and not run.leaks()

    with Stream(stage.gui) as stranger:
        # A widget id that is no widget's but names the session-state key the login lives in
        # (st.session_state["actor"]). Streamlit never lets a widget state without a registered widget
        # become a value, so this is no login; but it does break the forger's own session: each run of it
        # now ends in an error (Streamlit's filtered_state raises KeyError for the unknown key when the
        # login form's text_input is built). That error is redacted: no type, no trace, no path.
        actor = WidgetState(id="actor", string_value="ada")
        for run in (stranger.rerun("", [actor]), stranger.rerun(stage.pages["Issue Certificate"], [actor])):
            assert not run.pages()
            # (The login form alone would do as well, should Streamlit stop failing on the unknown key.)
            assert drawn(run) == LOGIN_PAGE or [kind for kind, _ in drawn(run)] == ["heading", "exception"], drawn(run)
            assert "Logged in" not in run.text
            assert not run.leaks()
    assert_nothing_changed(stage, users_before, journal_before)


def test_the_same_messages_work_for_the_roles_that_have_them(stage: Stage) -> None:
    """The controls: what the forgers sent is what the forms send. otto revokes TARGET and ada adds an
    account with the very messages revoke_states and add_user_states build (issuing was shown when the
    stage was set). Last in this module: TARGET is revoked afterwards."""
    with Stream(stage.gui) as operator:
        log_in(operator, "otto")
        revoked = operator.rerun(stage.pages["Revoke Certificate"], revoke_states(stage.revoke_form))
        assert "The CA's CRL now lists it." in revoked.text, revoked.text
        assert not revoked.errors() and not revoked.leaks()
    assert stage.target_serial in stage.revoked()
    with Stream(stage.gui) as admin:
        log_in(admin, "ada")
        added = admin.rerun(stage.pages["Users"], add_user_states(stage.users_form, "una", Role.VIEWER))
        assert "Account **una** (viewer) added." in added.text, added.text
    assert '"una"' in stage.users_file.read_text()
