"""Views of results: rich renderables (table.py), the SPEC JSON dict (json.py)."""
