"""Driving envs with policies: the control loop, chunk execution, clocks, recording."""
