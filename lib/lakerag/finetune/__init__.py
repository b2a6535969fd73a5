"""Build side: fine-tuning the embedding model and training a reranker from question sets, and
the gate that decides whether a trained model is promoted."""
