"""Operations: feature flags, protection (API keys, rate and request limits), health,
metrics, structured logs (one module per concern)."""
