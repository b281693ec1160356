"""Trainable models other than policies: critics of action chunks (steering) and latent world models (imagination)."""
