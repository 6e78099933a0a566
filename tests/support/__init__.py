"""Real collaborators for tests (servers, stores) - started and stopped by fixtures."""
