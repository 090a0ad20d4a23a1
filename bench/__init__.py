"""Side-by-side benchmark of lbcore against haproxy and nginx (bench/run.py)."""
