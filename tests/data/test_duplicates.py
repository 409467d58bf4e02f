"""Grouping exact-duplicate images so that a split never separates copies."""

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline.data.duplicates import image_groups, stratified_group_split, twins_in
from tests.support.synthetic import make_images


def test_copies_share_a_group_numbered_by_first_occurrence():
    images = np.zeros((6, 2, 2), np.uint8)
    images[1] = images[4] = 7
    images[2] = 3
    images[5] = images[2]
    images[3] = 9
    assert image_groups(images).tolist() == [0, 1, 2, 3, 1, 2]


def test_without_duplicates_the_split_is_exactly_scikit_learns():
    images, labels = make_images(20, seed=5)
    grouped = stratified_group_split(labels, image_groups(images), 0.1, 42)
    plain = train_test_split(np.arange(len(labels)), test_size=0.1, stratify=labels,
                             random_state=42)
    assert all(np.array_equal(a, b) for a, b in zip(grouped, plain))


def test_every_copy_follows_its_group_and_nothing_is_lost():
    images, labels = make_images(20, seed=5)
    images[50:60] = images[0]  # ten copies of one image
    train, test = stratified_group_split(labels, image_groups(images), 0.3, 1)
    assert sorted([*train, *test]) == list(range(len(labels)))
    side = set(range(50, 60)) | {0}
    assert side <= set(train) or side <= set(test)


def test_twins_are_found_by_exact_pixels():
    images, _ = make_images(2, seed=1)
    others = images[[3, 7]].copy()
    others[1, 0, 0] ^= 1  # one pixel off: not a twin
    assert np.flatnonzero(twins_in(images, others)).tolist() == [3]
