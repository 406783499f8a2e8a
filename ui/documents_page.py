"""The Documents page: upload, see, delete and search the documents answers draw on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from assistant.errors import AssistantError
from assistant.documents.parsing import SUPPORTED_SUFFIXES
from ui import login, resources
from ui.text import plain
from ui.uploads import ingest_uploads, upload_cap_mb

if TYPE_CHECKING:
    from assistant.bootstrap import Library

FILE_TYPES = sorted(s.lstrip(".") for s in SUPPORTED_SUFFIXES)


def render() -> None:
    st.title("Documents")
    library = resources.library()
    admin = login.may("upload")  # the library is shared: only admins change it
    if admin:
        _upload(library)
    else:
        st.caption("Only an admin can add or remove documents; you can search them and your "
                   "answers cite them.")

    try:
        docs = library.store.list_documents()
    except AssistantError as err:
        st.error(str(err))
        return
    st.subheader(f"Library ({len(docs)})")
    if not docs:
        st.info("No documents yet: upload one above, or run `assistant ingest PATH`."
                if admin else "No documents yet: ask an admin to add some.")
        return

    indexed = library.index.ids()
    chunk_ids = library.store.chunk_ids_by_document()
    for d in docs:
        cols = st.columns([5, 2, 2, 1], vertical_alignment="center")
        status = "indexed" if chunk_ids.get(d.id, set()) <= indexed else "not in index"
        cols[0].markdown(f"**{plain(d.name)}**  \n{d.kind} · {d.created_at:%Y-%m-%d %H:%M}")
        cols[1].caption(f"{d.chunk_count} chunk{'s' if d.chunk_count != 1 else ''} · {status}")
        cols[2].caption(f"{d.size_bytes / 1024:,.1f} KB")
        if admin:
            # One click on the bin only asks: deleting cannot be undone.
            with cols[3].popover("", icon=":material/delete:", help=f"Delete {plain(d.name)}"):
                st.markdown(f"Delete **{plain(d.name)}**? Answers stop finding it; those that "
                            "cited it keep their copy of the text.")
                st.button("Delete", key=f"del_doc_{d.id}", type="primary",
                          icon=":material/delete:", on_click=_delete, args=(d.id,))
    _search(library)


def _upload(library: Library) -> None:
    with st.form("upload_form", clear_on_submit=True):
        files = st.file_uploader(
            "Add documents", type=FILE_TYPES, accept_multiple_files=True, key="upload",
            max_upload_size=upload_cap_mb(library.ingestor.settings.max_upload_mb),
            help=f"Up to {library.ingestor.settings.max_upload_mb:g} MB each. "
            "The same content twice is stored once; a changed file with a stored name "
            "replaces it.",
        )
        submitted = st.form_submit_button("Add to library", icon=":material/upload:")
    if submitted and files:
        ingest_uploads(library, files)
    elif submitted:
        st.warning(f"Nothing was added: choose files first. A file over "
                   f"{upload_cap_mb(library.ingestor.settings.max_upload_mb)} MB cannot be "
                   "uploaded at all; the library takes files up to "
                   f"{library.ingestor.settings.max_upload_mb:g} MB.", icon=":material/upload_file:")


def _search(library: Library) -> None:
    st.subheader("Search")
    query = st.text_input("Search the documents", key="doc_search", placeholder="e.g. Who ruled Normandy?")
    mode = st.segmented_control(
        "Retrieval", ["hybrid", "dense", "lexical"], default=library.retriever.settings.mode,
        key="doc_search_mode",
    )
    if query.strip():
        hits = library.retriever.search(query, k=10, mode=mode or None)
        if not hits:
            st.info("No matching chunks.")
        for n, hit in enumerate(hits, start=1):
            where = f" · {hit.location}" if hit.location else ""
            # The matching text first: a score alone tells a reader nothing.
            with st.container(border=True, key=f"doc_hit_{n}"):
                st.markdown(f"**{n}. {plain(hit.document_name + where)}**")
                st.text(hit.text)
                st.caption(f"score {hit.score:.4f} · dense rank {hit.dense_rank or '-'} · "
                           f"lexical rank {hit.lexical_rank or '-'}")


def _delete(document_id: int) -> None:
    if not login.may("upload"):
        return
    try:
        resources.library().ingestor.delete(document_id)
    except AssistantError as err:
        st.error(str(err))
