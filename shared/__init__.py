"""Common code of the suite's services: bootstrap, config, errors, logs, metrics, domain types."""
