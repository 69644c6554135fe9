"""The library behind the Spark stages: parsing MIND files and daily logs, news vectors, the
one definition of a user's state, side features, feature rows, the candidate pool and the
tables they are written to."""
