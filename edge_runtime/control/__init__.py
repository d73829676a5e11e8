"""Control blocks: plain objects stepped by the scan, no I/O."""
