"""Build side: PDFs into bronze, parsed into silver sections and chunks (pypdf, the parse pool,
the token-aware chunker)."""
