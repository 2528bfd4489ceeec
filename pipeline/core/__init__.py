"""The small core every other part may use: config, errors, registry, safe I/O, devices,
progress."""
