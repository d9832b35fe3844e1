"""The dry-run report: planning without writing, and the drift check."""
