"""Training data: the built-in procedural shapes dataset and folders of videos or frames."""
