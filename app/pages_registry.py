"""The app's pages, in navigation order: adding a page is one line in :data:`PAGES`."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class PageSpec:
    """A page file under ``pages/`` and how it shows in the navigation and the URL."""

    file: str
    title: str
    icon: str
    url_path: str


PAGES: tuple[PageSpec, ...] = (
    PageSpec("explore.py", "Explore", ":material/map:", "explore"),
    PageSpec("similar.py", "Similar places", ":material/image_search:", "similar"),
    PageSpec("embedding_space.py", "Embedding space", ":material/scatter_plot:", "embedding"),
    PageSpec("my_classes.py", "My classes", ":material/label:", "classes"),
    PageSpec("change.py", "Change", ":material/compare:", "change"),
    PageSpec("report.py", "Report & export", ":material/summarize:", "report"),
    # Next (issue 5): Similar places, Embedding space, My classes, Report & export, each a
    # file in pages/ and one PageSpec here.
)


def navigation_pages() -> list[st.Page]:
    """``st.Page`` objects for ``st.navigation`` (paths relative to ``app/main.py``)."""
    return [
        st.Page(
            f"../pages/{p.file}", title=p.title, icon=p.icon, url_path=p.url_path, default=i == 0
        )
        for i, p in enumerate(PAGES)
    ]


def page_by_url_path(url_path: str | None) -> PageSpec | None:
    """The page with this url path, if any."""
    return next((p for p in PAGES if p.url_path == url_path), None)
