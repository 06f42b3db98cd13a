"""The loop: ``engine`` (outer loop) and ``round`` (inner loop)."""
