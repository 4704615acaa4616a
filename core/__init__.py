"""Image-classifier data product: all logic, importable without Streamlit."""
