"""Rollout evaluation: confidence intervals for reported metrics and videos of evaluated episodes."""
