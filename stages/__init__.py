"""The commands: a file here runs as `python -m stages.<name>` (the DVC stages, `recipe` and `study`); a
folder is a library named for its concept (core, envs, inference, training, benchmarks, claims,
experiments), and no library imports a command."""
