"""Evaluation: the prequential and cold-start protocols, baselines, ranking and list metrics, the HTML report."""
