"""Build side: generated question sets, retrieval and answer metrics, the evaluation jobs and the
promotion gate's comparisons."""
