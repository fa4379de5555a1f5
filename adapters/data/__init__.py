"""Datasets: fetching and caching MovieLens, contract CSV files, synthetic drifting and item-churn streams."""
