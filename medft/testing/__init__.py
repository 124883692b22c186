"""Builders of test data (dataset layouts in miniature) for tests/ and scripts/: production code never imports medft.testing."""
