"""Operations: protection, observability and runtime health of the API service."""
