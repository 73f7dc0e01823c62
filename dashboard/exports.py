"""The dashboard's model card and portable exports of a run (ONNX, TorchScript).

The card of the round `coordinator export` would export (the selected checkpoint, else
the last) is always offered as Markdown. Exports are offered when they exist: written
earlier by `coordinator export` into the default folder (~/.radfed/exports), or made
here on demand by a button (seconds for a ResNet; verified against PyTorch like the
command's). Downloads are named after the experiment and run as the dashboard names them
(dashboard.context.file_stem): EXPERIMENT-run-N-round-R.onnx, whatever the file on disk is called.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard.context import file_stem, on_download
from dashboard.words import without_paths

FORMAT_LABELS = {"onnx": "ONNX", "torchscript": "TorchScript"}


def _reader(path: Path) -> Callable[[], bytes]:
    """Deferred read: an export is only loaded when it is downloaded."""
    return path.read_bytes


def show_exports(entry: dict[str, Any]) -> None:
    """Model card download, then per format a download (file and card) or an export button."""
    from server.export import FORMATS, ExportError, checkpoint_card, choose_checkpoint, existing_export, export_entry

    if not entry.get("checkpoints"):
        return
    st.subheader("Model card and portable exports")
    try:
        _, card = checkpoint_card(entry)
        stem = file_stem(entry, choose_checkpoint(entry)[0]["server_round"])
    except ExportError as exc:
        st.caption(without_paths(str(exc)))
        return
    st.download_button(
        "Download model card (Markdown)",
        data=card,
        file_name=stem + ".card.md",
        mime="text/markdown",
        key=f"card-{entry['run_id']}",
        on_click=on_download(stem + ".card.md") or "rerun",
    )
    for fmt, label in FORMAT_LABELS.items():
        found = existing_export(entry, fmt)
        if found is None:
            if not st.button(
                f"Export {label}",
                key=f"export-{fmt}-{entry['run_id']}",
                help="Writes the file and its card to the server's export folder, checked against PyTorch.",
            ):
                continue
            try:
                with st.spinner(f"Exporting {label} and checking it against PyTorch..."):
                    done = export_entry(entry, fmt)
            except ExportError as exc:
                st.error(without_paths(str(exc)))
                continue
            st.caption(f"{label}: max abs difference from PyTorch {done.exported.check.max_abs_diff:.3g}")
            found = (done.model, done.card_md)
        model, card_md = found
        left, right = st.columns(2)
        with left:
            st.download_button(
                f"Download {label} ({stem + FORMATS[fmt]})",
                data=_reader(model),
                file_name=stem + FORMATS[fmt],
                mime="application/octet-stream",
                key=f"dl-{fmt}-{entry['run_id']}",
                on_click=on_download(stem + FORMATS[fmt]) or "rerun",
            )
        with right:
            st.download_button(
                f"Download {label} model card",
                data=card_md.read_text(),
                file_name=stem + FORMATS[fmt] + ".card.md",
                mime="text/markdown",
                key=f"dl-card-{fmt}-{entry['run_id']}",
                on_click=on_download(stem + FORMATS[fmt] + ".card.md") or "rerun",
            )
