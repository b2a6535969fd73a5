"""Query side (no Spark, no PDF parser): the index folder format, the hybrid retriever over it,
and the live index a running chain follows."""
