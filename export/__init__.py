"""export stage (see DESIGN and README)."""
