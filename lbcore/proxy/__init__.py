"""The forwarding paths: http (per-request balancing) and tcp (per-connection relay)."""
