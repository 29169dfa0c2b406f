"""Operations: feature flags, health, metrics, structured logs and the other service-hardening
parts (one module per concern)."""
