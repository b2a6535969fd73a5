"""Query side (no Spark, no PDF parser): the REST endpoint and chat page, its document list and
feedback, and the load test. Batch serving is a Spark job: `lakerag.lakehouse.batch_serving`."""
