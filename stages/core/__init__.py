"""What every stage and command shares: params.yaml read and checked (params), the shared paths (paths),
datasets and outputs on disk (storage), where a result came from (provenance), git and dvc as subprocesses
(commands), and every touch of a private TRL or vLLM API (private)."""
