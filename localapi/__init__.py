"""Local HTTP front for the scoring API handler (development, demo, fuzzing); never deployed."""
