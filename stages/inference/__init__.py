"""Models and what runs them forward: the embedded models and local checkpoints (models), the rollout engines
and the rollout loop (rollout), and the FLOPs of every forward and backward (flops)."""
