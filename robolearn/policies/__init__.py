"""Policy heads: each implements `robolearn.policies.base.Policy`."""
