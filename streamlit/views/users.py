"""Users (admins only): the accounts, their roles; add, change role, disable or enable, reset a password.

Every change is checked by pki.accounts (admin role) and audited; an admin who logged in with a password
gives it again for each change (pki.accounts.Gate.confirm: a session left open is not enough).
"""

import streamlit as st

from pki.accounts import PASSWORD_MIN, LoginRefused
from pki.roles import Role
from views import common
from views.tables import table_of

st.title("Users")
common.only(Role.ADMIN, "manage accounts")
store = common.gate().users
CONFIRM = "Your own password, to confirm {}"
asks = common.gate().asks_password(common.actor())
common.show_outcome("users_result")


def finish(message: str) -> None:
    st.session_state["users_result"] = ("success", message)
    st.rerun()


users = store.users()
if users:
    st.dataframe(
        table_of(
            {"User": u.name, "Role": u.role.value, "Enabled": not u.disabled, "Changed": u.changed} for u in users
        ),
        hide_index=True,
    )
else:
    st.info("No account yet: the GUI accepts the bootstrap login (PKI_PASSWORD) until the first one exists.")

st.subheader("Add an account")
with st.form("add_user", clear_on_submit=True):
    name = st.text_input("New user name", placeholder="alice")
    role = st.selectbox("Role", [r.value for r in Role], index=0)
    password = st.text_input(f"Initial password (at least {PASSWORD_MIN} characters)", type="password")
    confirm_add = st.text_input(CONFIRM.format("the new account"), type="password", key="confirm_add") if asks else ""
    added = st.form_submit_button("Add account", type="primary")
if added:
    try:
        common.gate().confirm(common.actor(), confirm_add)
        user = store.add(common.actor(), name, role, password)
    except LoginRefused as exc:
        st.error(str(exc), icon=":material/lock:")
    except common.FAILED as exc:
        common.show_failure(exc, "Adding the account")
    else:
        finish(f"Account **{user.name}** ({user.role}) added.")

if users:
    st.subheader("Change an account")
    with st.form("change_user", clear_on_submit=True):
        who = st.selectbox("Account", [u.name for u in users])
        change = st.radio("Change", ["Role", "Disable", "Enable", "New password"], horizontal=True)
        new_role = st.selectbox("New role (for Role)", [r.value for r in Role])
        new_password = st.text_input("New password (for New password)", type="password")
        confirm_change = (
            st.text_input(CONFIRM.format("the change"), type="password", key="confirm_change") if asks else ""
        )
        changed = st.form_submit_button("Apply")
    if changed:
        try:
            common.gate().confirm(common.actor(), confirm_change)
            if change == "Role":
                user = store.update(common.actor(), who, role=new_role)
                finish(f"**{user.name}** is now {user.role}.")
            elif change == "New password":
                user = store.update(common.actor(), who, password=new_password)
                finish(f"**{user.name}** has a new password.")
            else:
                user = store.update(common.actor(), who, disabled=change == "Disable")
                state = "disabled" if user.disabled else "enabled"
                finish(f"**{user.name}** is {state}.")
        except LoginRefused as exc:
            st.error(str(exc), icon=":material/lock:")
        except common.FAILED as exc:
            common.show_failure(exc, "Changing the account")
