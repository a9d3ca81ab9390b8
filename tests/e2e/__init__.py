"""End-to-end tests: the Helm chart installed with real helm, runs driven with real kubectl."""
