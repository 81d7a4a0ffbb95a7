"""Rewards: binary verdicts for samples; ``mathverify/`` (math answers) and ``sandbox/`` (code in Docker) beneath."""
