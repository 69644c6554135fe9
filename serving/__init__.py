"""The library behind the scoring stage: what it reads as of a day (state, candidate pool,
model checks), the per-task scoring of users against the pool, and the recommendations table
with its atomic partition swap."""
