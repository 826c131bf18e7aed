"""engines stage (see DESIGN and README)."""
