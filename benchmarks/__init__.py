"""Side-by-side benchmarks; each prints one JSON object."""
