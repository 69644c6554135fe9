"""Deep & Cross Network (DCN) news-recommender model code: layers, model builder, training and metrics."""
