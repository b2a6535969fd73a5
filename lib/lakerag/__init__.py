"""lakerag: a lakehouse RAG pipeline (PDFs -> Delta bronze/silver/gold -> MLflow RAG chain)."""

__version__ = "0.1.0"
