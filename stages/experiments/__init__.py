"""A study's experiments: the arms (arms), the rounds (rounds) through an engine, DVC's local queue (local) or
Ray (cluster), and the results they leave (results)."""
