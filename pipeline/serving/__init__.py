"""Using a model: the SavedModel signature, a person's own images, the model registry."""
