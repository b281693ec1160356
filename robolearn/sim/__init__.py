"""Simulated environments wrapped in robolearn's `Env` contract, so sim and real robots share one control loop."""
