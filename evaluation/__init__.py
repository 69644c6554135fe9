"""Offline evaluation of a model against the baselines on the dev impressions: the MIND
metrics per impression, their aggregation in Spark, and the report."""
