"""File formats and records shared by every stage."""
