"""Operations: feature flags, and (with the service hardening) health, metrics, logging, limits."""
