"""Operations: feature flags, protection (API keys, rate and request limits), and health,
metrics and logging of the API service."""
