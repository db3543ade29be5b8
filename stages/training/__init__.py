"""What the training stages (base, sft, grpo) share: the data (data), the trainer settings (settings), one run
from start to metrics (run), its callbacks (callbacks: compute and scaling curves), checkpoints, the
multi-process launch (launch), the GRPO reward (rewards) and verification iterations (viter)."""
