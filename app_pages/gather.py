"""Gather: bring images in from the demo set, a web search, URLs, uploads or a folder."""

from collections.abc import Callable

import streamlit as st

from core.data import download, gather, search, verify
from core.data.gather import GatherReport
from core.workspace import store
from ui.common import attempt, current_workspace, next_step, progress_bar, show_report

ws = current_workspace()
st.title("Gather images")
counts = store.label_counts(ws)
st.caption(
    f"Workspace **{ws.name}**: {sum(counts.values())} images in {len(counts)} label(s)"
    + (": " + ", ".join(f"{k} ({v})" for k, v in counts.items()) if counts else ".")
)


def label_input(key: str, optional: bool = False) -> str:
    """A label: pick an existing one or type a new one."""
    hint = "blank: use the archive's folders" if optional else "e.g. grizzly"
    return st.text_input(
        "Label (the class these images show)",
        key=key,
        placeholder=hint,
        help="Existing labels: " + (", ".join(counts) or "none yet"),
    )


def run(work: Callable[[], GatherReport]) -> None:
    """Run a gather action; keep its report for the next rerun; show errors, never tracebacks."""
    st.session_state["gather_report"] = (ws.name, attempt(work))
    st.rerun()


def download_settings(prefix: str) -> download.DownloadConfig:
    with st.expander("Download settings"):
        c1, c2, c3 = st.columns(3)
        workers = c1.number_input("Parallel downloads", 1, 32, 8, key=f"{prefix}_workers")
        timeout = c2.number_input("Timeout per image (s)", 1.0, 120.0, 15.0, key=f"{prefix}_timeout")
        max_mb = c3.number_input("Largest image (MB)", 1, 200, 20, key=f"{prefix}_maxmb")
        private = st.text_input(
            "Allow private networks (comma-separated CIDR, e.g. 127.0.0.1/32)",
            key=f"{prefix}_private",
            help="Refused by default: a URL list must not reach machines inside your network.",
        )
    return download.DownloadConfig(
        workers=int(workers),
        timeout_s=float(timeout),
        max_bytes=int(max_mb) * 1_000_000,
        allow_private=tuple(p.strip() for p in private.split(",") if p.strip()),
    )


demo, web, urls, upload, folder = st.tabs(["Demo digits", "Web search", "URLs", "Upload", "Folder"])

with demo:
    st.write(
        "scikit-learn's 1,797 handwritten digit scans, ten classes, written as 64x64 PNG images. "
        "No network needed. Re-running adds nothing twice."
    )
    digits = st.multiselect("Digits (all when empty)", [str(d) for d in range(10)], key="gather_demo_classes")
    if st.button("Add demo digits", key="gather_demo_go", type="primary"):
        run(lambda: gather.add_demo(ws, digits or None, on_progress=progress_bar("Writing")))

with web:
    provider = st.radio(
        "Search with",
        search.PROVIDERS,
        horizontal=True,
        key="gather_search_provider",
        help=f"Bing needs a key in ${search.BING_KEY_ENV}; DuckDuckGo needs none.",
    )
    label = label_input("gather_search_label")
    queries = st.text_area(
        "Queries, one per line (each is also searched with ' photo' added)",
        key="gather_search_queries",
        placeholder="grizzly bear",
    )
    per_query = st.number_input("Results per query", 1, 500, 50, key="gather_search_n")
    cfg = download_settings("gather_search")
    if st.button("Search and download", key="gather_search_go", type="primary"):
        wanted = search.SearchConfig(provider=provider, max_results=int(per_query))
        run(lambda: search.search_and_download(ws, label, queries.splitlines(), wanted, cfg, progress_bar("Downloading")))

with urls:
    label = label_input("gather_urls_label")
    pasted = st.text_area("Image URLs, one per line", key="gather_urls_text")
    url_file = st.file_uploader("…or a text file of URLs", type=["txt", "csv"], key="gather_urls_file")
    cfg = download_settings("gather_urls")
    if st.button("Download", key="gather_urls_go", type="primary"):
        text = pasted + "\n" + (url_file.getvalue().decode("utf-8", "replace") if url_file else "")
        run(lambda: download.download_url_text(ws, text, label, cfg, progress_bar("Downloading")))

with upload:
    files = st.file_uploader("Image files or zip archives", accept_multiple_files=True, key="gather_upload_files")
    label = label_input("gather_upload_label", optional=True)
    if st.button("Add uploads", key="gather_upload_go", type="primary"):
        uploaded = [(f.name, f.getvalue()) for f in files or []]
        run(lambda: gather.add_uploads(ws, uploaded, label, progress_bar("Adding")))

with folder:
    st.write(
        "A folder on this machine with one subfolder per label (`<label>/<image>`), or "
        "`train/<label>/…` and `valid/<label>/…` to keep an existing split."
    )
    path = st.text_input("Folder", key="gather_folder_path", placeholder="/home/me/Pictures/bears")
    flat_label = st.text_input("Label for a flat folder (leave blank for <label>/ subfolders)", key="gather_folder_label")
    if st.button("Import folder", key="gather_folder_go", type="primary"):
        run(lambda: gather.import_folder(ws, path, flat_label, progress_bar("Importing")))

last = st.session_state.get("gather_report")
if last is not None and last[0] == ws.name:
    st.divider()
    st.subheader("Last run")
    show_report(ws, last[1])
    checked = st.session_state.get("gather_verified")  # (workspace, report, the gather run it followed)
    if checked is not None and checked[0] == ws.name and checked[2] is last[1]:
        report = checked[1]
        st.success(
            f"Verified {report.checked} images: {len(report.quarantined)} quarantined (moved aside, never deleted), "
            f"{len(report.adopted)} found on disk and cataloged."
        )
        c1, c2 = st.columns(2)
        with c1:
            next_step("app_pages/train.py", "Next: train a model")
        with c2:
            st.page_link(
                "app_pages/explore.py", label="Or look at the images first (Verify and explore)", icon=":material/insights:"
            )
    elif st.button(
        "Next: verify the images",
        type="primary",
        key="gather_verify",
        help="Decode every image fully, quarantine the broken ones (moved, never deleted) and list duplicates",
    ):
        done = attempt(lambda: verify.verify_workspace(ws, on_progress=progress_bar("Verifying")))
        st.session_state["gather_verified"] = (ws.name, done, last[1])
        st.rerun()
