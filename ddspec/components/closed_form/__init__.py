"""closed_form."""
