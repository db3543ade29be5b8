"""The reasoning benchmarks: read from their public release layouts (catalogue) and scored as their own
evaluations score them (scoring)."""
