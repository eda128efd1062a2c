"""Placeholder entry point; the pages issue replaces it."""
import streamlit as st

st.title("Chest X-ray pneumonia study")
st.write("Not for clinical use.")
