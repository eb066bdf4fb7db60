"""Studio page /jobs."""

import streamlit as st

st.header("Jobs")
