"""Using a model: the SavedModel signature and a person's own images."""
