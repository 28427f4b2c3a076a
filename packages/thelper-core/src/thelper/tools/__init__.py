"""Tools that work on trained sessions: export, inference and split archives."""
