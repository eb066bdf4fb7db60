"""The backdrop studio (Streamlit script): ``backdrop studio`` or ``streamlit run app.py``.

Thin over the Python API: widgets here and in views/, work in backdrop.studio.core, the pipeline
and the job queue. Pages by URL (``st.navigation``): /text-to-image, /new-background, /data-sets,
/jobs, each a script in views/; what they share is in ui.py. Models load once per process
(st.cache_resource); one generation runs at a time across all browser sessions
(core.GENERATION_LOCK).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from backdrop.version import __version__
from backdrop.studio import core

VIEWS = Path(__file__).with_name("views")
PAGES = (  # (script, title, url path, icon)
    ("text_to_image.py", "Text to image", "text-to-image", ":material/brush:"),
    ("new_background.py", "New background", "new-background", ":material/wallpaper:"),
    ("data_sets.py", "Data sets", "data-sets", ":material/dataset:"),
    ("jobs.py", "Jobs", "jobs", ":material/list_alt:"),
)

st.set_page_config(layout="wide")  # no page_title: each page's own title names the browser tab
page = st.navigation([st.Page(VIEWS / script, title=title, url_path=url, icon=icon, default=i == 0)
                      for i, (script, title, url, icon) in enumerate(PAGES)])

st.sidebar.title("backdrop studio")
st.session_state.setdefault("out_dir", core.default_output_dir())
st.sidebar.text_input("Output folder", key="out_dir",
                      help="text to image and new background save every image here as PNG and JPEG, with its metadata")
st.sidebar.checkbox("Invisible watermark", key="watermark",
                    help="embed 'backdrop' invisibly (DWT-DCT); survives PNG, usually not JPEG")
page.run()
st.sidebar.caption(f"backdrop {__version__} · images are saved to {st.session_state['out_dir']}")
