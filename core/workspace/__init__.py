"""Stage 1, the workspace: folders and paths, the DuckDB database (schema, connections, settings,
audit trail), each image's train/valid/test split, and creating, opening, renaming and deleting
workspaces. Imports nothing else from core but `core.errors`."""
