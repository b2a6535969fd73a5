"""Build side: what the LLM and the embedding models add to silver (section summaries, gold
embeddings) and the jobs that publish gold for retrieval (the index folder, Vector Search)."""
