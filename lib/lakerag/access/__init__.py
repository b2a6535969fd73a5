"""Who may read what: document permissions from landing-path rules, and who is asking (bearer
tokens, a trusted proxy, or Databricks Model Serving's caller)."""
