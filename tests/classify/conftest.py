"""Fixtures of the classifier tests (the data itself: clfdata.py)."""
import pytest

from clfdata import write_reviews


@pytest.fixture
def reviews(tmp_path):
    return write_reviews(tmp_path / "reviews.csv")
