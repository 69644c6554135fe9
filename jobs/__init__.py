"""The Spark jobs: generate_mind, embed_news, build_features, score."""
