"""reuters46: the same documents, labels, ids and split as keras.datasets.reuters."""

from __future__ import annotations

import numpy as np
import pytest

LABEL_ORDER_HEAD = ["cocoa", "grain", "veg-oil", "earn", "acq", "wheat", "copper", "housing"]


def test_counts_match_the_reference(reuters46):
    assert len(reuters46.labels) == 46
    assert len(reuters46.train) == 8982
    assert len(reuters46.test) == 2246
    assert len(reuters46.train) + len(reuters46.test) == 11228


def test_label_ids_follow_first_appearance(reuters46):
    assert list(reuters46.labels[:8]) == LABEL_ORDER_HEAD
    assert reuters46.labels[45] == "lead"
    assert len(set(reuters46.labels)) == 46


def test_first_labels_of_the_shuffled_split(reuters46):
    # the same first training labels as keras.datasets.reuters.load_data()
    assert reuters46.train.y[:10].tolist() == [3, 4, 3, 4, 4, 4, 4, 3, 3, 16]
    first = reuters46.train.documents[0]
    assert "as a\nresult of its December acquisition of Space Co" in first.body
    assert reuters46.labels[reuters46.train.y[0]] == first.topics[0] == "earn"


def test_every_document_is_labelled_with_its_first_topic(reuters46):
    for split in (reuters46.train, reuters46.test):
        assert all(reuters46.labels[y] == d.topics[0] for d, y in zip(split.documents, split.y))
    newids = [d.newid for d in reuters46.train.documents + reuters46.test.documents]
    assert len(set(newids)) == 11228


def test_model_text_is_title_then_body(reuters46):
    docs = reuters46.train.documents + reuters46.test.documents
    assert sum(1 for d in docs if not d.body) == 975
    texts = reuters46.train.texts("title_body")
    assert texts[0].startswith(reuters46.train.documents[0].title + "\n")
    assert reuters46.train.texts("body")[0] == reuters46.train.documents[0].body
    with pytest.raises(ValueError, match="unknown text field"):
        reuters46.train.texts("summary")


def test_validation_comes_from_training_data_only(reuters46):
    fit, val = reuters46.validation_split(0.1, seed=3)
    train_ids = {d.newid for d in reuters46.train.documents}
    test_ids = {d.newid for d in reuters46.test.documents}
    fit_ids, val_ids = {d.newid for d in fit.documents}, {d.newid for d in val.documents}
    assert fit_ids | val_ids == train_ids
    assert not fit_ids & val_ids and not val_ids & test_ids
    assert 0.09 < len(val) / len(reuters46.train) < 0.11
    # stratified: every topic with at least 5 training documents shows up in validation
    counts = np.bincount(reuters46.train.y, minlength=46)
    assert set(np.flatnonzero(counts >= 5)) <= set(np.unique(val.y).tolist())
    again = reuters46.validation_split(0.1, seed=3)[1]
    assert [d.newid for d in again.documents] == [d.newid for d in val.documents]
    other = reuters46.validation_split(0.1, seed=4)[1]
    assert [d.newid for d in other.documents] != [d.newid for d in val.documents]


def test_holding_out_validation_trains_on_the_fit_split_and_tests_on_validation(reuters46):
    fit, val = reuters46.validation_split(0.1, seed=3)
    held = reuters46.holding_out_validation(0.1, seed=3)
    assert [d.newid for d in held.train.documents] == [d.newid for d in fit.documents]
    assert [d.newid for d in held.test.documents] == [d.newid for d in val.documents]
    assert held.labels == reuters46.labels and held.unlabelled == reuters46.unlabelled
    inner_fit, inner_val = held.validation_split(0.1, seed=3)
    read = {d.newid for d in inner_fit.documents + inner_val.documents}
    assert read == {d.newid for d in fit.documents} and not read & {d.newid for d in val.documents}


def test_unlabelled_holds_the_rest_of_the_corpus(reuters46):
    """Stories without a kept topic: text for embedding pre-training, never a labelled story."""
    labelled = {d.newid for d in reuters46.train.documents + reuters46.test.documents}
    unlabelled = {d.newid for d in reuters46.unlabelled}
    assert len(reuters46.unlabelled) == len(unlabelled) == 21578 - 11228
    assert not unlabelled & labelled
    kept = set(reuters46.labels)
    assert all(not d.topics or d.topics[0] not in kept for d in reuters46.unlabelled)
