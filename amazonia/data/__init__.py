"""Chips and labels: Kaggle's layout, the label vocabulary, the synthetic default, TFRecords."""
