"""The embedded default dataset: procedurally rendered chips in Kaggle's layout."""
