"""Small shared helpers (atomic writes, third-party log noise)."""
