"""Stage 2, the data: decoding and measuring images, gathering them (demo, folders, zips, uploads,
URLs, web search), verifying and quarantining them, and exploring the dataset. Imports only the
workspace stage."""
