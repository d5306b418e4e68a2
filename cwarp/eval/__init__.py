"""Evaluation of frozen features: linear / kNN probes, retrieval, the cwarp-probe CLI."""
