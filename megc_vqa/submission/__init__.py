"""Leaderboard files: writers, the validator and the submission zip."""
