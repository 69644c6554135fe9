"""The Spark jobs: embed_news, build_features, score."""
