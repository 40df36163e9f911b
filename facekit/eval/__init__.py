"""Evaluation and deployment: verification sets and pairs, the K-fold protocol,
embeddings of images, and export of the embedding model."""
