"""DVC pipeline stages: one module per stage, plus shared code (envs, params, storage)."""
