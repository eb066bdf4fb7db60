"""Studio page /jobs: every job of the queue the studio shares with `backdrop serve` (from this
page's data sets, the CLI through the service, or any HTTP client), with its state, progress, time
and results; cancel. The queue is a file (SQLite), so the list survives a studio restart.

Deep links: ?state=running&job=ID.
"""

from __future__ import annotations

import time

import streamlit as st

from backdrop.studio import ui
from backdrop.studio.ui import linked, one_line, to_query

STATES = ["all", "queued", "running", "done", "failed", "cancelled"]
LINKS = {"state": ("jobs_state", "all", str), "job": ("jobs_job", "", str)}


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "–"


def _took(rec) -> str:
    if not rec.started:
        return "–"
    return f"{(rec.finished or time.time()) - rec.started:.0f} s"


def main() -> None:
    st.header("Jobs")
    linked(LINKS)
    queue = ui.job_queue()
    if queue is None:
        st.info("The job queue (backdrop.jobs) is not installed here.")
        return
    if st.session_state.get("jobs_state") not in STATES:
        st.session_state["jobs_state"] = "all"
    st.selectbox("State", STATES, key="jobs_state")
    to_query(LINKS)
    st.caption(f"Queue: {queue.root} (by default the one `backdrop serve` uses too)")

    @st.fragment(run_every=2.0)
    def table() -> None:
        state = st.session_state.get("jobs_state", "all")
        recs = queue.list(state=None if state == "all" else state, limit=200)
        if not recs:
            st.info("No jobs yet. Submit one from the Data sets page, or to `backdrop serve`.")
            return
        counts = queue.counts()
        st.caption(" · ".join(f"{k} {v}" for k, v in counts.items() if v))
        widths = [2.2, 1.3, 1.3, 2, 2, 1, 3, 1.5]
        head = st.columns(widths)
        for col, title in zip(head, ["Job", "Kind", "State", "Progress", "Created", "Took", "Source / results", ""]):
            col.markdown(f"**{title}**")
        for rec in recs:
            c = st.columns(widths)
            c[0].markdown(f"[`{rec.id}`](/jobs?job={rec.id})")
            c[1].write(rec.kind)
            c[2].write(rec.state + (" (cancel asked)" if rec.cancel and rec.state == "running" else ""))
            total = rec.total or 0
            c[3].progress(min(1.0, rec.done / total) if total else (1.0 if rec.state == "done" else 0.0),
                          text=f"{rec.done}/{total or '?'}")
            c[4].text(_when(rec.created))
            c[5].text(_took(rec))
            src = rec.params.get("source") or "(uploaded)"
            link = f"[contact sheet](/data-sets?job={rec.id})" if rec.kind == "augment" and rec.state == "done" else ""
            c[6].markdown(f"{src}  \n{link}" if link else src)
            if rec.state in ("queued", "running") and not rec.cancel:
                if c[7].button("Cancel", key=f"cancel_{rec.id}"):
                    try:
                        queue.cancel(rec.id)
                    except Exception as exc:  # noqa: BLE001 - shown in one line
                        st.error(f"Cannot cancel {rec.id}: {one_line(exc)}")
                    st.rerun()

    table()
    job_id = st.session_state.get("jobs_job")
    if job_id:
        st.subheader(f"Job {job_id}")
        try:
            rec = queue.get(job_id)
        except Exception as exc:  # noqa: BLE001 - an old link
            st.error(f"No such job: {job_id} ({one_line(exc)})")
            return
        ui.job_progress(rec)
        st.json({k: v for k, v in rec.to_dict().items() if k != "failed"}, expanded=False)
        from backdrop.jobs.runner import out_dir

        st.caption(f"Results on this machine: {out_dir(queue, job_id)}")


main()
