"""Exact-duplicate images, kept together.

A split that puts one copy of an image in training and another in validation or test
leaks: the model is scored on an image it was trained on. Here copies form a group,
and a split moves whole groups, so every copy lands on the same side.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def pixel_keys(images: np.ndarray) -> np.ndarray:
    """One opaque, comparable value per image: its raw pixel bytes."""
    rows = np.ascontiguousarray(images.reshape(len(images), -1))
    return rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize)))[:, 0]


def image_groups(images: np.ndarray) -> np.ndarray:
    """A group id per image, shared by pixel-identical copies.

    Ids are numbered in order of first occurrence, so data without duplicates gets
    0..n-1 and a grouped split of it is exactly the plain split.
    """
    if len(images) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(pixel_keys(images), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.ravel()]


def _members(groups: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Every image of the chosen groups' representatives, in the representatives' order."""
    position = np.full(int(groups.max()) + 1, -1, dtype=np.int64)
    position[groups[chosen]] = np.arange(len(chosen))
    members = np.flatnonzero(position[groups] >= 0)
    return members[np.argsort(position[groups[members]], kind="stable")]


def stratified_group_split(labels: np.ndarray, groups: np.ndarray, test_size: float,
                           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): scikit-learn's seeded stratified split of one representative
    per group (its first copy, stratified by its label); the other copies follow it.

    Raises ValueError as train_test_split does (e.g. a class with one representative).
    """
    representatives = np.unique(groups, return_index=True)[1]
    train, test = train_test_split(representatives, test_size=test_size,
                                   stratify=labels[representatives], random_state=seed)
    return _members(groups, train), _members(groups, test)


def twins_in(images: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Mask of the images whose exact pixels occur among `others`."""
    if len(images) == 0 or len(others) == 0:
        return np.zeros(len(images), dtype=bool)
    return np.isin(pixel_keys(images), pixel_keys(others))
