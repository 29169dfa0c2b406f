"""Operations: health, metrics, structured logs and the other service-hardening parts."""
