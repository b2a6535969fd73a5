"""Query side (no Spark, no PDF parser): LLM backends, the RAG chain, citation checking, the chain
as an MLflow ResponsesAgent (model from code) and its registration."""
