"""Training: the network, the one fitting path train and tune share, the platform record."""
