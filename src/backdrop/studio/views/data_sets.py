"""Studio page /data-sets."""

import streamlit as st

st.header("Data sets")
