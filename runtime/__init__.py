"""runtime stage (see DESIGN and README)."""
