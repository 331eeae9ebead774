"""Operations: logging, Sentry, telemetry counters and credential-age notices."""
