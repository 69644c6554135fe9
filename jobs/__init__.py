"""The stage entry points, one per `./spark-submit.sh JOB`: embed_news, build_features, train,
evaluate, score, daily, doctor, show_runs and show_recommendations. Each parses its
arguments, reads, calls the library packages and publishes (ARCHITECTURE.md)."""
