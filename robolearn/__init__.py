"""robolearn: learn robot manipulation policies from demonstrations, evaluate them in simulation, deploy them.

    policy = robolearn.load_policy("runs/pusht_diffusion/checkpoints/last")
"""
from robolearn.policies.checkpoint import load_policy

__all__ = ["load_policy"]
__version__ = "0.1.0"
