"""Levers: the actions available, each with a cost of use, and the utility matrix that scores them; the actions the
objective names, one click away; a renamed action keeps its column. Every change is saved as it arrives, merged
cell by cell with what other sessions saved: there is no Save button to lose (Streamlit's data editor sends an edit
150 ms after it is made, and a click followed that closely by another change can be dropped on a busy machine;
a change of a table's state cannot)."""

import pandas as pd
import streamlit as st

from core.drivetrain import levers, objective
from core.errors import UserError
from core.model import registry
from core.workspace import store
from ui.common import attempt, current_workspace, table

BASE = "levers_base"  # (workspace, the saved utility this session's edits started from)
LAST = "levers_last_grid"  # (workspace, grid key, the matrix as edited) in the last run: a rename carries its cells
CARRIED = "levers_carried"  # (workspace, grid key, the matrix a new grid starts from after a rename)
VERSION = "levers_grid_version"  # bumped to draw the matrix afresh from what was saved (another session's values)

ws = current_workspace()
st.title("Levers")
st.caption(
    "Drivetrain step 2: what can we do? One row per action; then, for each thing an image can really be, "
    "what each action is worth, in your own unit (a missed grizzly -1000, a false alarm -10, ...)."
)
production = registry.production_version(ws)
classes = list(registry.read_meta(ws, production)["classes"]) if production else sorted(store.label_counts(ws))
if len(classes) < 2:
    st.info("Levers need at least two classes: gather images of two or more labels first.")
    st.stop()
utility, saved = levers.load_utility(ws, classes)
notice = st.empty()  # one place, used or not: the elements below keep their positions when the first save hides it
if not saved:  # (a page whose elements shift shows the last run's beside this one's while it reruns)
    notice.info("These are defaults (right +10, wrong -10, a review costs 2): edit them to your situation.")

suggested = levers.suggested_utility(utility, objective.load_objective(ws).decision)
if suggested is not None:
    with st.container(border=True):
        st.markdown(
            f"Your objective names these actions: **{', '.join(suggested.actions)}** ({suggested.refer!r} refers an "
            f"image to a person). The table below has {'the default ones' if not saved else 'others'}."
        )
        if st.button(f"Use these actions: {', '.join(suggested.actions)}", key="levers_use_suggested"):
            attempt(lambda: levers.save_utility(ws, suggested))
            for key in [k for k in st.session_state if str(k).startswith("levers_")]:
                st.session_state.pop(key, None)  # the tables are drawn again from what was saved
            st.session_state["levers_message"] = "Saved the actions: now say what each is worth in the matrix below."
            st.rerun()
if message := st.session_state.pop("levers_message", None):
    st.success(message)
unit = st.text_input("Unit of utility", utility.unit, key="levers_unit", help="dollars, minutes, points, ...")
st.subheader("Actions")
actions = st.data_editor(
    levers.actions_frame(utility),
    num_rows="dynamic",
    hide_index=True,
    key="levers_actions",
    height=36 * (len(utility.actions) + 2) + 4,
    column_config={
        "action": st.column_config.TextColumn("action", required=True),
        "cost": st.column_config.NumberColumn(f"cost of use ({unit})", help="subtracted whenever the action is taken"),
    },
)
names = [str(n) for n in actions["action"].tolist() if isinstance(n, str) and n.strip()]
refer_options = names or [levers.REFER]
refer = st.selectbox(
    "Action that refers an image to a human",
    refer_options,
    index=refer_options.index(utility.refer) if utility.refer in refer_options else len(refer_options) - 1,
    key="levers_refer",
)

st.subheader("Utility matrix")
st.caption(f"Rows: what the image really is. Columns: the action taken. Cells: payoff in {unit}, before the cost of use.")
grid = f"levers_matrix_{'|'.join(names)}"  # a new grid when the actions change
grid += f"#{st.session_state[VERSION]}" if st.session_state.get(VERSION) else ""
last = st.session_state.get(LAST)
if last and last[0] == ws.name and last[1] != grid:  # the actions changed: the new grid starts from the old one's cells
    st.session_state[CARRIED] = (ws.name, grid, levers.carried_matrix(last[2], names))
carried = st.session_state.get(CARRIED)
if carried and carried[:2] == (ws.name, grid):
    matrix = carried[2]
else:
    matrix = levers.carried_matrix(levers.matrix_frame(utility), names)
edited = st.data_editor(
    matrix,
    key=grid,
    height=36 * (len(matrix) + 1) + 4,  # every row visible
    disabled=["_index"],  # the rows are the classes: not editable
    column_config={"_index": st.column_config.Column("true class", width=130)}
    | {n: st.column_config.NumberColumn(n, width=w, help=n) for n, w in levers.column_widths(names).items()},
)
st.session_state[LAST] = (ws.name, grid, edited)
pending = levers.unsaved(utility, actions, edited, refer, classes, unit)
if not pending or st.session_state.get(BASE, (None,))[0] != ws.name:
    st.session_state[BASE] = (ws.name, utility)  # what the edits start from: another session may save meanwhile
problem = None
if pending:  # saved as it arrives
    try:
        mine = levers.utility_from_tables(actions, edited, refer, classes, unit)
    except UserError as exc:  # an empty cell or name while the user is still typing: said, nothing saved
        problem = str(exc)
    else:
        now = attempt(lambda: levers.save_utility(ws, mine, base=st.session_state[BASE][1]))  # merged with theirs
        st.session_state[BASE] = (ws.name, now)
        st.session_state.pop(CARRIED, None)  # the saved matrix is the grid's source from now on
        if now != mine:  # another session changed what this one shows: draw every table again from what was saved
            st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1
            for key in (LAST, "levers_unit", "levers_refer", "levers_actions"):
                st.session_state.pop(key, None)
            st.rerun()
        utility, saved = now, True
        notice.empty()
status = st.empty()  # one place, used or not (as the notice above)
if problem:
    status.warning(f"Not saved yet: {problem}")
elif saved:  # from the database, so any later rerun still shows it
    status.success("Saved. See what this matrix means for decisions on **Policy**.")
st.caption("Every change is saved as you make it, merged cell by cell with what other analysts save meanwhile.")
with st.expander("Net utility (payoff minus cost of use): what the policy maximises"):
    table(pd.DataFrame(utility.net(), index=list(utility.rows), columns=list(utility.actions)), index=True)
